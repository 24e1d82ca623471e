-- The broker's state (src/store/postgres.rs): one table per collection of
-- the StateStore interface, each a map from key to document.
--
-- Keys are text in the "C" collation, so the primary key orders them byte by
-- byte, as the embedded redb store scans them, whatever the database's
-- locale. Documents are the exact bytes the broker wrote (JSON, as bytea and
-- not jsonb): connection requests carry signed evidence that must re-verify
-- byte for byte. Inspect one with convert_from(document, 'UTF8')::jsonb.
--
-- Applied by refinery when a broker opens the store; the history is in
-- schema_migrations. Never edit a released migration: add V2__... instead.

-- Registered participants, with their certificates and endpoints.
CREATE TABLE participants (
    key text COLLATE "C" PRIMARY KEY CHECK (octet_length(key) BETWEEN 1 AND 1024),
    document bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Connection requests, with the evidence of every signed step.
CREATE TABLE connection_requests (
    key text COLLATE "C" PRIMARY KEY CHECK (octet_length(key) BETWEEN 1 AND 1024),
    document bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The grants approved connection requests created.
CREATE TABLE grants (
    key text COLLATE "C" PRIMARY KEY CHECK (octet_length(key) BETWEEN 1 AND 1024),
    document bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
