-- Every broker's audit records, shipped in order from its own durable log
-- (src/audit/ship.rs, src/store/postgres/audit_copy.rs, issue 15), so that
-- auditors and citizens' access history search the whole cluster. Each
-- broker keeps its own Merkle log and signing key: this copy is for search,
-- the broker's log and its signed tree heads stay the evidence, and
-- `mconnect audit verify --shipped` checks the copy against the log.
--
-- Applied by refinery when a broker opens the store; never edit a released
-- migration: add V5__... instead.

-- One row per record: (broker_id, seq) is the record's place in that
-- broker's log; `record` its exact leaf bytes (canonical JSON, kept as bytes
-- so that they hash to the leaf: jsonb would reformat them), `leaf_hash` the
-- RFC 9162 leaf hash. The other columns are the auditor's filters, taken
-- from the record by the broker that shipped it.
CREATE TABLE audit_records (
    broker_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    leaf_hash bytea NOT NULL CHECK (octet_length(leaf_hash) = 32),
    record bytea NOT NULL,
    received_us bigint NOT NULL,
    event text COLLATE "C" NOT NULL,
    exchange_id text COLLATE "C" NOT NULL,
    consumer text COLLATE "C",
    provider text COLLATE "C",
    service text COLLATE "C",
    subjects text[] COLLATE "C" NOT NULL DEFAULT '{}',
    PRIMARY KEY (broker_id, seq)
);
-- Newest first, the order every search answers in.
CREATE INDEX audit_records_time ON audit_records (received_us, seq, broker_id);
CREATE INDEX audit_records_subjects ON audit_records USING gin (subjects);
CREATE INDEX audit_records_consumer ON audit_records (consumer, received_us);
CREATE INDEX audit_records_provider ON audit_records (provider, received_us);
CREATE INDEX audit_records_service ON audit_records (service, received_us);
CREATE INDEX audit_records_exchange ON audit_records (exchange_id);

-- How far each broker's log is shipped: records [pruned_below, shipped_seq)
-- are in audit_records, those below pruned_below were removed under
-- retention. Advanced in the same transaction as the rows it covers, so a
-- record is shipped exactly once whichever side crashes.
CREATE TABLE audit_shipping (
    broker_id text COLLATE "C" PRIMARY KEY,
    shipped_seq bigint NOT NULL DEFAULT 0 CHECK (shipped_seq >= 0),
    pruned_below bigint NOT NULL DEFAULT 0 CHECK (pruned_below >= 0 AND pruned_below <= shipped_seq),
    updated_at timestamptz NOT NULL DEFAULT now()
);
