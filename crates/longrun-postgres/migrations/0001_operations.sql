-- One row per operation. `body` is the canonical operation as JSON (lossless); the other
-- columns copy the fields that queries filter, order, lock or fence on.
CREATE TABLE operations (
    seq                     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                      UUID        NOT NULL UNIQUE,
    name                    TEXT        NOT NULL,
    queue                   TEXT        NOT NULL,
    priority                INTEGER     NOT NULL,
    status                  TEXT        NOT NULL,
    run_at                  TIMESTAMPTZ NOT NULL,
    lease_expires_at        TIMESTAMPTZ,
    completed_at            TIMESTAMPTZ,
    parent_id               UUID,
    root_id                 UUID        NOT NULL,
    customer                BIGINT      NOT NULL,
    created_by              BIGINT      NOT NULL,
    idempotency_key         TEXT,
    idempotency_fingerprint TEXT,
    version                 BIGINT      NOT NULL,
    body                    JSON        NOT NULL
);

CREATE INDEX operations_ready ON operations (priority DESC, seq) WHERE status = 'pending';
CREATE INDEX operations_pending_run_at ON operations (run_at) WHERE status = 'pending';
CREATE INDEX operations_leases ON operations (lease_expires_at) WHERE status = 'running';
CREATE INDEX operations_completed ON operations (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX operations_by_status ON operations (status, seq);
CREATE INDEX operations_by_name ON operations (name, seq);
CREATE INDEX operations_by_parent ON operations (parent_id, seq) WHERE parent_id IS NOT NULL;
CREATE INDEX operations_by_root ON operations (root_id, seq);
CREATE INDEX operations_by_customer ON operations (customer, seq);
CREATE UNIQUE INDEX operations_idempotency ON operations (customer, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Every change is announced to every node: `<id> <version> <status>` on a channel named after
-- the schema, so deployments (and test runs) in different schemas do not hear each other.
CREATE FUNCTION longrun_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('longrun_' || TG_TABLE_SCHEMA, NEW.id::text || ' ' || NEW.version || ' ' || NEW.status);
    RETURN NULL;
END
$$;

CREATE TRIGGER operations_changed AFTER INSERT OR UPDATE ON operations
    FOR EACH ROW EXECUTE FUNCTION longrun_announce_change();
