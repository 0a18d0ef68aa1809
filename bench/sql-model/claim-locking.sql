-- A claim of 32 as before migration 0006: ready entries and operations locked, each operation's
-- row rewritten running, ready entries out, running rows in; no wait for the WAL flush.
BEGIN;
SET LOCAL synchronous_commit = off;
WITH picked AS (SELECT seq FROM ready WHERE run_at <= now() ORDER BY priority DESC, seq LIMIT 32 FOR UPDATE SKIP LOCKED),
ops AS (SELECT seq FROM operations WHERE seq = ANY(ARRAY(SELECT seq FROM picked)) FOR UPDATE SKIP LOCKED),
unready AS (DELETE FROM ready WHERE seq IN (SELECT seq FROM ops)),
run AS (INSERT INTO running SELECT seq, now() + interval '5 min' FROM ops)
UPDATE operations o SET status = 'running', lease_expires_at = now() + interval '5 min', version = version + 1, body = overlay(body placing 'r' from 10 for 1) FROM ops WHERE o.seq = ops.seq;
COMMIT;
