-- A claim writes a narrow `claims` row instead of a new version of the operation's ~1 KB row
-- (see `longrun_core::claim`): the operation's row stays as it was before the claim (pending,
-- at version `from_version`, still in the pending indexes), and the `claims` row holds what
-- the claim's `start` transition was given. Every read applies it to a row still at
-- `from_version`; the operation's next change writes the row out whole and deletes its
-- `claims` row. Claims skip pending rows that have one.
CREATE TABLE claims (
    seq              INTEGER PRIMARY KEY,  -- the operation's
    from_version     INTEGER NOT NULL,
    lease_id         TEXT    NOT NULL,
    worker           TEXT    NOT NULL,
    started_ns       INTEGER NOT NULL,     -- unix nanoseconds
    lease_ns         INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL      -- unix microseconds
);
-- Expired leases of claims not yet written out.
CREATE INDEX claims_leases ON claims (lease_expires_at);
