-- Every transition of an operation becomes a HOT update (a new row version on the same page,
-- no index entries): `operations` keeps indexes only on columns that never change after the
-- submit, and leaves room on its pages for new versions. What the dropped indexes found is in
-- narrow tables kept by the application in the same transaction, as `ready` is for pending
-- operations (migration 0004): `running` (one row per running operation, with its lease) and
-- `finished` (one row per finished operation). Before, every claim and every completion wrote a
-- new entry in each of the ten indexes of `operations`.
CREATE TABLE running (
    seq              BIGINT      PRIMARY KEY,
    lease_expires_at TIMESTAMPTZ NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
-- Expired leases.
CREATE INDEX running_lease_expiry ON running (lease_expires_at);

CREATE TABLE finished (
    seq          BIGINT      PRIMARY KEY,
    status       TEXT        NOT NULL,
    completed_at TIMESTAMPTZ NOT NULL
);
-- Listing by final status, newest first.
CREATE INDEX finished_by_status ON finished (status, seq);
-- Retention.
CREATE INDEX finished_completed ON finished (completed_at);

INSERT INTO running (seq, lease_expires_at)
    SELECT seq, coalesce(lease_expires_at, now()) FROM operations WHERE status = 'running';
INSERT INTO finished (seq, status, completed_at)
    SELECT seq, status, coalesce(completed_at, now()) FROM operations
    WHERE status IN ('succeeded', 'failed', 'cancelled');

DROP INDEX operations_by_status;
DROP INDEX operations_leases;
DROP INDEX operations_completed;

-- Room on every page for new versions of its rows: half of it, as a row (about 1 KB) changes
-- two or three times in a few milliseconds, before the versions it left can be pruned (pages
-- written before this migration get it as they are rewritten).
ALTER TABLE operations SET (fillfactor = 50);

-- The body is written by longrun and read back whole, never queried: stored as text, it is
-- not parsed on every write (as `json` input is).
ALTER TABLE operations ALTER COLUMN body TYPE text;
