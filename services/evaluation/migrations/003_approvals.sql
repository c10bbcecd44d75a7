
CREATE TABLE IF NOT EXISTS approval_requests (
    request_id uuid PRIMARY KEY,
    command_type text NOT NULL,
    target text NOT NULL,
    province_code text,
    year integer NOT NULL,
    amount bigint,
    batch_id uuid,
    maker text NOT NULL,
    maker_role text NOT NULL,
    checker_roles text[] NOT NULL,
    payload jsonb NOT NULL,
    state text NOT NULL,
    requested_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    decided_at timestamptz,
    checker text,
    checker_role text,
    reason_code text,
    note text,
    result jsonb
);
CREATE INDEX IF NOT EXISTS approval_requests_listing
    ON approval_requests (state, province_code, requested_at);
CREATE INDEX IF NOT EXISTS approval_requests_due
    ON approval_requests (expires_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS approval_requests_batch
    ON approval_requests (batch_id) WHERE batch_id IS NOT NULL;
