-- A claim writes only the narrow `running` row, not a new version of the operation's ~1 KB
-- row: the row keeps the operation as it was before the claim (pending, at version
-- `from_version`), and the `running` row holds what the claim's `start` transition was given
-- (its lease, worker, start time and lease length). Every read applies that transition to the
-- row while the row's version is still `from_version`; the first later change of the
-- operation (a heartbeat, its completion, an expired lease) writes it out whole; until then
-- the row's own `status`, `lease_expires_at` and `version` columns are those from before the
-- claim. A `running` row written any other way (a hand-over) leaves these columns empty.
ALTER TABLE running
    ADD COLUMN lease_id     UUID,
    ADD COLUMN worker       TEXT,
    ADD COLUMN started_ns   BIGINT,
    ADD COLUMN lease_ns     BIGINT,
    ADD COLUMN from_version BIGINT;
