-- TKS as known from tkm.recruitment.v1, with their current caseload (from MentorAssigned/Unassigned)
CREATE TABLE mentors (
    tks_id text PRIMARY KEY,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    contract_year integer NOT NULL,
    active boolean NOT NULL,
    left_on date,
    caseload integer NOT NULL DEFAULT 0 CHECK (caseload >= 0)
);
CREATE INDEX mentors_active_regency ON mentors (regency_code) WHERE active;
CREATE INDEX mentors_active_province ON mentors (province_code) WHERE active;

-- funded groups as known from tkm.groups.v1, with their current mentor
CREATE TABLE mentored_groups (
    group_id text PRIMARY KEY,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    year integer NOT NULL,
    funded_on date NOT NULL,
    dissolved_on date,
    tks_id text,
    assigned_on date,
    last_tks_id text,
    unassigned_on date,
    unassigned_reason text
);
CREATE INDEX mentored_groups_by_mentor ON mentored_groups (tks_id) WHERE tks_id IS NOT NULL;
CREATE INDEX mentored_groups_unassigned ON mentored_groups (province_code, regency_code)
    WHERE tks_id IS NULL AND dissolved_on IS NULL;

-- every stint of a TKS on a group: [assigned_on, unassigned_on)
CREATE TABLE mentor_assignments (
    group_id text NOT NULL,
    stream_version integer NOT NULL,
    tks_id text NOT NULL,
    assigned_on date NOT NULL,
    unassigned_on date,
    reason text,
    PRIMARY KEY (group_id, stream_version)
);
CREATE INDEX mentor_assignments_by_tks ON mentor_assignments (tks_id);

CREATE TABLE monthly_reports (
    group_id text NOT NULL,
    period text NOT NULL,
    tks_id text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    revenue bigint NOT NULL,
    production_units bigint NOT NULL,
    production_unit text NOT NULL,
    members_active integer NOT NULL,
    new_workers integer NOT NULL,
    partnership boolean NOT NULL,
    capital_access boolean NOT NULL,
    market_access boolean NOT NULL,
    lpj_help boolean NOT NULL,
    problems text NOT NULL DEFAULT '',
    on_time boolean NOT NULL,
    filed_at timestamptz NOT NULL,
    amended_at timestamptz,
    amendments integer NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, period)
);
CREATE INDEX monthly_reports_by_tks ON monthly_reports (tks_id);

CREATE TABLE overdue_reports (
    group_id text NOT NULL,
    period text NOT NULL,
    tks_id text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    flagged_at timestamptz NOT NULL,
    PRIMARY KEY (group_id, period)
);
CREATE INDEX overdue_reports_by_period ON overdue_reports (period, province_code, regency_code);
CREATE INDEX overdue_reports_by_tks ON overdue_reports (tks_id);

CREATE TABLE period_closures (
    period text PRIMARY KEY,
    due integer NOT NULL,
    filed integer NOT NULL,
    overdue integer NOT NULL,
    closed_at timestamptz NOT NULL
);

-- per regency and month, kept up to date in place by every report event
CREATE TABLE report_totals (
    regency_code text NOT NULL,
    period text NOT NULL,
    province_code text NOT NULL,
    filed integer NOT NULL DEFAULT 0,
    on_time integer NOT NULL DEFAULT 0,
    overdue integer NOT NULL DEFAULT 0,
    revenue bigint NOT NULL DEFAULT 0,
    members_active bigint NOT NULL DEFAULT 0,
    new_workers bigint NOT NULL DEFAULT 0,
    lpj_help integer NOT NULL DEFAULT 0,
    partnership integer NOT NULL DEFAULT 0,
    capital_access integer NOT NULL DEFAULT 0,
    market_access integer NOT NULL DEFAULT 0,
    PRIMARY KEY (regency_code, period)
);
CREATE INDEX report_totals_by_province ON report_totals (province_code, period);
