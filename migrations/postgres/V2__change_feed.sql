-- The change feed (src/store/postgres.rs, "Change feed"): every committed
-- write to a state table notifies channel `mconnect_state`, so that every
-- broker on this database reloads what changed within a second of the
-- commit instead of at its next start.
--
-- pg_notify inside a transaction is delivered only when it commits (and
-- never if it rolls back), in commit order; identical notifications of one
-- transaction are folded into one. The payload is
--
--     {table} {origin} {key}
--
-- where `origin` is the writing broker's `mconnect.origin` session setting
-- (`-` for anyone else: psql, another tool), so a broker can tell its own
-- writes, already in its snapshot, from others', and `key` the row's key
-- (last, since keys may hold spaces; at most 1024 bytes, well under the
-- 8000-byte payload limit). TRUNCATE notifies `{table} {origin}` with no
-- key. A broker also announces a reload of its catalog and policy files
-- with the payload `rules {origin}`.

CREATE FUNCTION mconnect_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    origin text := coalesce(nullif(current_setting('mconnect.origin', true), ''), '-');
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM pg_notify('mconnect_state', TG_TABLE_NAME || ' ' || origin);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('mconnect_state', TG_TABLE_NAME || ' ' || origin || ' ' || OLD.key);
    ELSE
        PERFORM pg_notify('mconnect_state', TG_TABLE_NAME || ' ' || origin || ' ' || NEW.key);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER participants_notify AFTER INSERT OR UPDATE OR DELETE ON participants
    FOR EACH ROW EXECUTE FUNCTION mconnect_notify_change();
CREATE TRIGGER participants_notify_truncate AFTER TRUNCATE ON participants
    FOR EACH STATEMENT EXECUTE FUNCTION mconnect_notify_change();

CREATE TRIGGER connection_requests_notify AFTER INSERT OR UPDATE OR DELETE ON connection_requests
    FOR EACH ROW EXECUTE FUNCTION mconnect_notify_change();
CREATE TRIGGER connection_requests_notify_truncate AFTER TRUNCATE ON connection_requests
    FOR EACH STATEMENT EXECUTE FUNCTION mconnect_notify_change();

CREATE TRIGGER grants_notify AFTER INSERT OR UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION mconnect_notify_change();
CREATE TRIGGER grants_notify_truncate AFTER TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION mconnect_notify_change();
