-- Read models of the groups service: written only by projections.py (inside each command's
-- transaction), read only by views.py. All of them can be rebuilt from the event store.

CREATE TABLE group_registry (
    group_id text PRIMARY KEY,
    year integer NOT NULL,
    stage text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    business_type text NOT NULL,
    name text NOT NULL DEFAULT '',
    external_ref text,
    status text NOT NULL,                     -- registered, approved, rejected, funded, dissolved
    status_reason text,
    member_count integer NOT NULL,
    tranches integer NOT NULL DEFAULT 0,
    funded_total bigint NOT NULL DEFAULT 0,
    last_budget_year integer,
    last_disbursed_on date,
    lpj_due_on date,
    lpj_status text NOT NULL DEFAULT 'none',  -- none, due, submitted, returned, accepted
    accounted_total bigint NOT NULL DEFAULT 0,
    bimtek_count integer NOT NULL DEFAULT 0,
    product_evidence_count integer NOT NULL DEFAULT 0,
    expo_count integer NOT NULL DEFAULT 0,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX group_registry_by_region ON group_registry (year, province_code, regency_code, name);
CREATE INDEX group_registry_by_province ON group_registry (province_code, year);
CREATE INDEX group_registry_lpj_open ON group_registry (lpj_due_on)
    WHERE lpj_status IN ('due', 'submitted', 'returned');

-- personal data: never leaves this service except masked, to authorised readers
CREATE TABLE group_members (
    group_id text NOT NULL,
    nik text NOT NULL,
    name text NOT NULL,
    phone text,
    birth_date date NOT NULL,
    PRIMARY KEY (group_id, nik)
);

-- one active group per person and year: the primary key is the rule
CREATE TABLE active_memberships (
    year integer NOT NULL,
    nik text NOT NULL,
    group_id text NOT NULL,
    PRIMARY KEY (year, nik)
);
CREATE INDEX active_memberships_by_group ON active_memberships (group_id);

CREATE TABLE people_reached (
    year integer NOT NULL,
    province_code text NOT NULL,
    groups_registered integer NOT NULL DEFAULT 0,
    members_registered integer NOT NULL DEFAULT 0,
    groups_funded integer NOT NULL DEFAULT 0,
    members_funded integer NOT NULL DEFAULT 0,
    PRIMARY KEY (year, province_code)
);

CREATE TABLE funding_by_province (
    budget_year integer NOT NULL,
    province_code text NOT NULL,
    groups_funded integer NOT NULL DEFAULT 0,
    tranches integer NOT NULL DEFAULT 0,
    amount_disbursed bigint NOT NULL DEFAULT 0,
    amount_accounted bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_year, province_code)
);

CREATE TABLE lpj_reports (
    report_id text PRIMARY KEY,
    group_id text NOT NULL,
    tools bigint NOT NULL,
    materials bigint NOT NULL,
    other bigint NOT NULL,
    remaining_balance bigint NOT NULL,
    evidence_count integer NOT NULL,
    funds_covered bigint NOT NULL,
    status text NOT NULL,                     -- submitted, accepted, returned
    reason text,
    submitted_at timestamptz NOT NULL,
    reviewed_at timestamptz
);
CREATE INDEX lpj_reports_by_group ON lpj_reports (group_id);

-- Bimtek attended, product evidence, expo participation
CREATE TABLE group_activities (
    group_id text NOT NULL,
    stream_version integer NOT NULL,
    kind text NOT NULL,                       -- bimtek, product, expo
    title text NOT NULL,
    place text,
    held_on date NOT NULL,
    evidence_count integer,
    PRIMARY KEY (group_id, stream_version)
);
