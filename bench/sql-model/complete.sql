-- A completion of 32 running operations: rows locked in seq order and rewritten succeeded,
-- running rows out, finished rows in; the commit waits for its WAL flush.
BEGIN;
WITH picked AS (SELECT seq FROM running ORDER BY seq LIMIT 32),
ops AS (SELECT seq FROM operations WHERE seq = ANY(ARRAY(SELECT seq FROM picked)) ORDER BY seq FOR UPDATE),
unrun AS (DELETE FROM running WHERE seq IN (SELECT seq FROM ops)),
fin AS (INSERT INTO finished SELECT seq, 'succeeded', now() FROM ops)
UPDATE operations o SET status = 'succeeded', completed_at = now(), lease_expires_at = NULL, version = version + 1, body = overlay(body placing 's' from 11 for 1) FROM ops WHERE o.seq = ops.seq;
COMMIT;
