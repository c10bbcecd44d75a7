-- Facts consumed from recruitment, groups and mentoring: one row per contract, exit, mentor
-- assignment, report (group + period) and group, so each event is one upsert and a redelivered
-- or repeated fact overwrites itself instead of adding up.

CREATE TABLE tks_contracts (
    tks_id text NOT NULL,
    year integer NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    contract_start date NOT NULL,
    contract_end date NOT NULL,
    PRIMARY KEY (tks_id, year)
);
CREATE INDEX tks_contracts_span ON tks_contracts (contract_start, contract_end);

CREATE TABLE tks_exits (
    tks_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('released', 'resigned')),
    year integer NOT NULL,
    effective_date date NOT NULL,
    reason text,
    PRIMARY KEY (tks_id, kind, effective_date)
);

CREATE TABLE mentor_assignments (
    group_id text NOT NULL,
    tks_id text NOT NULL,
    assigned_on date NOT NULL,
    unassigned_on date,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    PRIMARY KEY (group_id, tks_id, assigned_on)
);

CREATE TABLE report_facts (
    group_id text NOT NULL,
    period text NOT NULL,
    year integer NOT NULL,
    tks_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('filed', 'overdue')),
    on_time boolean NOT NULL DEFAULT false,
    revenue bigint,
    new_workers integer,
    members_active integer,
    PRIMARY KEY (group_id, period)
);
CREATE INDEX report_facts_by_tks ON report_facts (year, tks_id);

CREATE TABLE group_facts (
    group_id text PRIMARY KEY,
    funded_year integer,
    first_disbursed_on date,
    tranches integer NOT NULL DEFAULT 0,
    province_code text,
    regency_code text,
    lpj_status text,
    lpj_accepted_on date,
    dissolved_on date
);
CREATE INDEX group_facts_by_year ON group_facts (funded_year);

CREATE TABLE periods_closed (
    period text PRIMARY KEY,
    year integer NOT NULL,
    due integer NOT NULL,
    filed integer NOT NULL,
    overdue integer NOT NULL
);

-- Events about a year whose cycle was already closed: kept, listed, never applied to results.
CREATE TABLE late_events (
    event_id uuid PRIMARY KEY,
    year integer NOT NULL,
    topic text NOT NULL,
    event_type text NOT NULL,
    tks_id text,
    group_id text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb NOT NULL
);
CREATE INDEX late_events_by_year ON late_events (year, received_at);

-- The TKS mentoring a group on a day: the assignment covering the day, else the latest one
-- started before it, else the first one (a fact dated before any assignment we know of).
CREATE FUNCTION mentor_on(p_group text, p_day date) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.tks_id FROM mentor_assignments a
    WHERE a.group_id = p_group
    ORDER BY (a.assigned_on <= p_day) DESC,
             (a.unassigned_on IS NULL OR a.unassigned_on > p_day) DESC,
             abs(a.assigned_on - p_day), a.tks_id
    LIMIT 1
$$;

-- The service's own results, written by its projector.

CREATE TABLE evaluation_cycles (
    year integer PRIMARY KEY,
    status text NOT NULL CHECK (status IN ('open', 'closed')),
    policy_version text NOT NULL,
    policy jsonb,
    opened_at timestamptz NOT NULL,
    opened_by text NOT NULL,
    closed_at timestamptz,
    closed_by text,
    evaluated integer,
    continued integer,
    replaced integer
);

CREATE TABLE evaluation_results (
    year integer NOT NULL,
    tks_id text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    score double precision NOT NULL,
    decision text NOT NULL CHECK (decision IN ('continue', 'replace')),
    indicators jsonb NOT NULL,
    policy_version text NOT NULL,
    PRIMARY KEY (year, tks_id)
);
CREATE INDEX evaluation_results_by_region ON evaluation_results (year, province_code, regency_code);
CREATE INDEX evaluation_results_by_decision ON evaluation_results (year, decision);

CREATE TABLE evaluation_exclusions (
    year integer NOT NULL,
    tks_id text NOT NULL,
    reason text NOT NULL,
    months_served integer NOT NULL,
    province_code text,
    regency_code text,
    PRIMARY KEY (year, tks_id)
);
