-- The claim queue: one narrow row per pending operation, kept by the application in the same
-- transaction as the operation's change (a row exactly while the operation is pending, with
-- its current run_at). Claims walk this small table in claim order instead of a partial index
-- of `operations`, where every claimed row left dead entries (its updates change indexed columns,
-- so are never HOT) that every later claim walked again until a vacuum of the whole table.
CREATE TABLE ready (
    seq      BIGINT      PRIMARY KEY,
    priority INTEGER     NOT NULL,
    run_at   TIMESTAMPTZ NOT NULL,
    name     TEXT        NOT NULL,
    queue    TEXT        NOT NULL
) WITH (
    -- Small and churning: vacuum and analyze after a fixed number of changes, not a fraction.
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- Claim order. Nothing INCLUDEd: a claim locks what it reads, so it reads the heap row (no
-- index-only scan) and filters there; a narrow index is fewer pages to walk.
CREATE INDEX ready_claim_order ON ready (priority DESC, seq);
-- The earliest run_at a filter accepts (how long an idle worker may sleep): index-only.
CREATE INDEX ready_run_at ON ready (run_at) INCLUDE (name, queue);

INSERT INTO ready (seq, priority, run_at, name, queue)
    SELECT seq, priority, run_at, name, queue FROM operations WHERE status = 'pending';

DROP INDEX operations_ready;
DROP INDEX operations_pending_run_at;

-- Changes are announced by the application now, many per notification, inside the
-- transaction that makes them.
DROP TRIGGER operations_changed ON operations;
DROP TRIGGER operations_deleted ON operations;
DROP FUNCTION longrun_announce_change();
DROP FUNCTION longrun_announce_delete();
