-- A claim of 32 that leaves operations alone: ready entries locked and deleted, running rows in,
-- bodies read; no wait for the WAL flush (longrun's claim since migration 0006).
BEGIN;
SET LOCAL synchronous_commit = off;
WITH picked AS (DELETE FROM ready WHERE seq = ANY(ARRAY(SELECT seq FROM ready WHERE run_at <= now() ORDER BY priority DESC, seq LIMIT 32 FOR UPDATE SKIP LOCKED)) RETURNING seq),
run AS (INSERT INTO running SELECT seq, now() + interval '5 min' FROM picked)
SELECT count(length(body)) FROM operations WHERE seq = ANY(ARRAY(SELECT seq FROM picked));
COMMIT;
