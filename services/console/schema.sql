-- The console's own database: its read model of the four contract topics (written only by
-- services/console/projection.py, one transaction per batch with the event ids it applied) and
-- its users and sessions. Idempotent: run at every start.

CREATE TABLE IF NOT EXISTS applied_events (
    event_id text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- TKS: one row per TKS (stage = the briefing stage, tahap, it was recruited in)
CREATE TABLE IF NOT EXISTS tks (
    tks_id text PRIMARY KEY,
    stage int,
    province_code text NOT NULL,
    regency_code text NOT NULL
);
-- one row per contract year (recruited, then renewed); status of that year's contract
CREATE TABLE IF NOT EXISTS tks_years (
    tks_id text NOT NULL,
    year int NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    contract_start date,
    contract_end date,
    status text NOT NULL DEFAULT 'active',  -- active, resigned, released
    PRIMARY KEY (tks_id, year)
);

CREATE TABLE IF NOT EXISTS tkm_groups (
    group_id text PRIMARY KEY,
    year int,
    stage text,
    province_code text,
    regency_code text,
    business_type text,
    member_count int NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'registered',
    reason_code text,
    funded_total bigint NOT NULL DEFAULT 0,
    accounted_total bigint NOT NULL DEFAULT 0,
    last_budget_year int,
    lpj_due_on date,
    registered_at timestamptz,
    updated_at timestamptz
);
CREATE INDEX IF NOT EXISTS tkm_groups_by_province ON tkm_groups (province_code, status);

CREATE TABLE IF NOT EXISTS fundings (
    group_id text NOT NULL,
    tranche int NOT NULL,
    amount bigint NOT NULL,
    disbursed_on date NOT NULL,
    budget_year int NOT NULL,
    province_code text NOT NULL,
    PRIMARY KEY (group_id, tranche)
);

CREATE TABLE IF NOT EXISTS lpj_reports (
    report_id text PRIMARY KEY,
    group_id text NOT NULL,
    tools bigint NOT NULL,
    materials bigint NOT NULL,
    other bigint NOT NULL,
    remaining_balance bigint NOT NULL,
    status text NOT NULL DEFAULT 'submitted',  -- submitted, accepted, returned
    reason_code text,
    submitted_at timestamptz
);

CREATE TABLE IF NOT EXISTS group_activities (
    event_id text PRIMARY KEY,
    group_id text NOT NULL,
    kind text NOT NULL,
    detail text,
    occurred_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS mentor_assignments (
    group_id text NOT NULL,
    tks_id text NOT NULL,
    province_code text,
    regency_code text,
    assigned_on date NOT NULL,
    unassigned_on date,
    PRIMARY KEY (group_id, tks_id, assigned_on)
);

CREATE TABLE IF NOT EXISTS monthly_reports (
    group_id text NOT NULL,
    period text NOT NULL,
    tks_id text NOT NULL,
    revenue bigint NOT NULL,
    production_units int NOT NULL,
    production_unit text,
    members_active int NOT NULL,
    new_workers int NOT NULL,
    on_time boolean NOT NULL,
    amended boolean NOT NULL DEFAULT false,
    filed_at timestamptz,
    PRIMARY KEY (group_id, period)
);
CREATE TABLE IF NOT EXISTS overdue_reports (
    group_id text NOT NULL,
    period text NOT NULL,
    tks_id text NOT NULL,
    PRIMARY KEY (group_id, period)
);
CREATE TABLE IF NOT EXISTS closed_periods (
    period text PRIMARY KEY,
    due int NOT NULL,
    filed int NOT NULL,
    overdue int NOT NULL
);

CREATE TABLE IF NOT EXISTS evaluation_cycles (
    year int PRIMARY KEY,
    policy_version text,
    status text NOT NULL DEFAULT 'open',
    evaluated int,
    continued int,
    replaced int
);
CREATE TABLE IF NOT EXISTS tks_evaluations (
    year int NOT NULL,
    tks_id text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    score double precision NOT NULL,
    decision text NOT NULL,
    indicators jsonb NOT NULL,
    PRIMARY KEY (year, tks_id)
);

-- who may sign in: a role and its scope, an argon2id hash (never the password)
CREATE TABLE IF NOT EXISTS console_users (
    email text PRIMARY KEY,
    display_name text NOT NULL,
    role text NOT NULL,
    province_code text,
    tks_id text,
    password_hash text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- a session is known by the SHA-256 of its cookie: a leaked table opens no session
CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash text PRIMARY KEY,
    email text NOT NULL REFERENCES console_users (email) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
