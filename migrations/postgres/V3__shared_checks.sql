-- The checks brokers of one cluster make together (src/store/postgres/shared.rs,
-- issue 15): the single-use ids every broker has accepted (PROTOCOL.md
-- section 2), the quota counts of each (consumer, service), and the brokers
-- alive now (each enforces its share of a grant's rate).
--
-- Applied by refinery when a broker opens the store; never edit a released
-- migration: add V4__... instead.

-- Single-use ids (request ids, digests of signature nonces) per client, with
-- the broker clock's unix second at which a broker accepted them. A row is
-- refused again for 24 hours; older rows may be taken over by a new claim
-- and are deleted in bounded batches by every broker's expiry pass.
CREATE TABLE replay_ids (
    client text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    seen_at bigint NOT NULL,
    PRIMARY KEY (client, id)
);
CREATE INDEX replay_ids_seen_at ON replay_ids (seen_at);

-- Calls counted against a quota: per (consumer, service), per UTC day
-- (period 'day', window_no = unix day) or month (period 'month', window_no =
-- year * 12 + month - 1). Brokers lease counts in blocks
-- (mconnect_quota_lease), so `used` is what the cluster has handed out,
-- which is never more than the limit the lease was asked under.
CREATE TABLE quota_counts (
    consumer text COLLATE "C" NOT NULL,
    service text COLLATE "C" NOT NULL,
    period text NOT NULL CHECK (period IN ('day', 'month')),
    window_no bigint NOT NULL,
    used bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, service, period, window_no)
);

-- Leases up to p_want calls of (consumer, service) in the day and month
-- windows given, within both limits (a NULL limit is not counted), in one
-- round trip and atomically: both rows are locked, day first, so concurrent
-- leases cannot deadlock or together pass a limit. Returns how many calls
-- were granted (0 when a limit is reached) and the counts after the lease.
CREATE FUNCTION mconnect_quota_lease(
    p_consumer text, p_service text,
    p_day bigint, p_day_limit bigint,
    p_month bigint, p_month_limit bigint,
    p_want bigint
) RETURNS TABLE (granted bigint, day_used bigint, month_used bigint)
LANGUAGE plpgsql AS $$
DECLARE
    d_used bigint := 0;
    m_used bigint := 0;
    room bigint := greatest(p_want, 0);
BEGIN
    IF p_day_limit IS NOT NULL THEN
        INSERT INTO quota_counts (consumer, service, period, window_no)
            VALUES (p_consumer, p_service, 'day', p_day) ON CONFLICT DO NOTHING;
        SELECT q.used INTO d_used FROM quota_counts q
            WHERE q.consumer = p_consumer AND q.service = p_service
              AND q.period = 'day' AND q.window_no = p_day FOR UPDATE;
        room := least(room, greatest(p_day_limit - d_used, 0));
    END IF;
    IF p_month_limit IS NOT NULL THEN
        INSERT INTO quota_counts (consumer, service, period, window_no)
            VALUES (p_consumer, p_service, 'month', p_month) ON CONFLICT DO NOTHING;
        SELECT q.used INTO m_used FROM quota_counts q
            WHERE q.consumer = p_consumer AND q.service = p_service
              AND q.period = 'month' AND q.window_no = p_month FOR UPDATE;
        room := least(room, greatest(p_month_limit - m_used, 0));
    END IF;
    IF room > 0 AND p_day_limit IS NOT NULL THEN
        UPDATE quota_counts SET used = used + room, updated_at = now()
            WHERE consumer = p_consumer AND service = p_service
              AND period = 'day' AND window_no = p_day;
        d_used := d_used + room;
    END IF;
    IF room > 0 AND p_month_limit IS NOT NULL THEN
        UPDATE quota_counts SET used = used + room, updated_at = now()
            WHERE consumer = p_consumer AND service = p_service
              AND period = 'month' AND window_no = p_month;
        m_used := m_used + room;
    END IF;
    RETURN QUERY SELECT room, d_used, m_used;
END;
$$;

-- The brokers of the cluster: each upserts its row every few seconds
-- (seen_at, by the database's clock) and counts the rows seen recently.
CREATE TABLE brokers (
    id text COLLATE "C" PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
);
