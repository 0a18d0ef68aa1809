-- Claims walk the ready index in claim order and stop at LIMIT: it carries the columns the
-- claim filters on, so rows that are not yet due or not asked for are skipped in the index.
DROP INDEX operations_ready;
CREATE INDEX operations_ready ON operations (priority DESC, seq, run_at, name, queue)
    WHERE status = 'pending';
