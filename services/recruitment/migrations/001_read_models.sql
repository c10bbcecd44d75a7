-- The NIK key: one registration per NIK and programme year, claimed in the registering
-- transaction (a service table, not a projection).
CREATE TABLE applicant_nik (
    year integer NOT NULL,
    nik text NOT NULL,
    applicant_id text NOT NULL,
    PRIMARY KEY (year, nik)
);

CREATE TABLE rounds (
    round_id text PRIMARY KEY,
    year integer NOT NULL,
    stage integer NOT NULL,
    status text NOT NULL,
    recruited integer NOT NULL DEFAULT 0,
    opened_at timestamptz NOT NULL,
    closed_at timestamptz
);
CREATE INDEX rounds_by_year ON rounds (year, stage);

-- regency_code '' is a quota for the whole province
CREATE TABLE round_quotas (
    round_id text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    places integer NOT NULL,
    recruited integer NOT NULL DEFAULT 0,
    PRIMARY KEY (round_id, province_code, regency_code)
);

CREATE TABLE applicants (
    applicant_id text PRIMARY KEY,
    year integer NOT NULL,
    nik_masked text NOT NULL,
    full_name text NOT NULL,
    sex text NOT NULL,
    birth_date date NOT NULL,
    education text NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    phone text NOT NULL,
    email text NOT NULL,
    status text NOT NULL,
    passed_screening boolean NOT NULL DEFAULT false,
    rejection_reason text,
    rejection_note text,
    briefing_stage integer,
    briefing_city text,
    briefed_on date,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX applicants_by_year ON applicants (year, province_code, status);

-- one row per TKS and contract year
CREATE TABLE tks_roster (
    tks_id text NOT NULL,
    year integer NOT NULL,
    round_id text NOT NULL,
    stage integer NOT NULL,
    recruited_year integer NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    status text NOT NULL,
    contract_start date NOT NULL,
    contract_end date NOT NULL,
    evaluation_score double precision,
    ended_on date,
    end_reason text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tks_id, year)
);
CREATE INDEX tks_roster_by_place ON tks_roster (year, province_code, regency_code);

CREATE TABLE vacancies (
    vacancy_id text PRIMARY KEY,
    year integer NOT NULL,
    province_code text NOT NULL,
    regency_code text NOT NULL,
    reason text NOT NULL,
    replaces_tks_id text,
    status text NOT NULL,
    filled_by_tks_id text,
    filled_in_round_id text,
    opened_at timestamptz NOT NULL,
    filled_at timestamptz
);
CREATE INDEX vacancies_by_place ON vacancies (year, province_code, regency_code, status);
