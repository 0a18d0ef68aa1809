-- Deleting an operation is announced too, so whoever waits on it learns at once that it is gone.
CREATE FUNCTION longrun_announce_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('longrun_' || TG_TABLE_SCHEMA, OLD.id::text || ' ' || (OLD.version + 1) || ' ' || OLD.status);
    RETURN NULL;
END
$$;

CREATE TRIGGER operations_deleted AFTER DELETE ON operations
    FOR EACH ROW EXECUTE FUNCTION longrun_announce_delete();
