-- One row per operation. `body` is the canonical operation as JSON (lossless); the other
-- columns copy the fields that queries filter, order or fence on.
CREATE TABLE operations (
    seq                     INTEGER PRIMARY KEY AUTOINCREMENT,
    id                      TEXT    NOT NULL UNIQUE,
    name                    TEXT    NOT NULL,
    queue                   TEXT    NOT NULL,
    priority                INTEGER NOT NULL,
    status                  TEXT    NOT NULL,
    run_at                  INTEGER NOT NULL,  -- unix microseconds
    lease_expires_at        INTEGER,           -- unix microseconds, while running
    completed_at            INTEGER,           -- unix microseconds, once terminal
    parent_id               TEXT,
    root_id                 TEXT    NOT NULL,
    customer                INTEGER NOT NULL,
    created_by              INTEGER NOT NULL,
    idempotency_key         TEXT,
    idempotency_fingerprint TEXT,
    version                 INTEGER NOT NULL,
    body                    TEXT    NOT NULL
);

-- Claim order among ready operations.
CREATE INDEX operations_ready ON operations (priority DESC, seq) WHERE status = 'pending';
-- When the next delayed operation becomes due.
CREATE INDEX operations_pending_run_at ON operations (run_at) WHERE status = 'pending';
-- Expired leases.
CREATE INDEX operations_leases ON operations (lease_expires_at) WHERE status = 'running';
-- Retention.
CREATE INDEX operations_completed ON operations (completed_at) WHERE completed_at IS NOT NULL;
-- List filters (newest first within each).
CREATE INDEX operations_by_status ON operations (status, seq);
CREATE INDEX operations_by_name ON operations (name, seq);
CREATE INDEX operations_by_parent ON operations (parent_id, seq) WHERE parent_id IS NOT NULL;
CREATE INDEX operations_by_root ON operations (root_id, seq);
CREATE INDEX operations_by_customer ON operations (customer, seq);
-- Idempotency keys are unique per tenant.
CREATE UNIQUE INDEX operations_idempotency ON operations (customer, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
