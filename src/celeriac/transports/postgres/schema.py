"""The PostgreSQL tables (one schema, `celeriac` by default) and their forward migrations.

`schema_version` holds one row: the version the tables are at. Each entry of MIGRATIONS
moves them one version up; `migrate` applies the missing ones in one transaction, under
an advisory lock, so processes starting together migrate once. A database whose version is
newer than this code knows is an error (an older celeriac must not write into tables whose
meaning it does not know): upgrade celeriac, or use another `postgres_schema`.
"""

from __future__ import annotations

from typing import Any

from ...exceptions import ImproperlyConfigured

# Rows are inserted, claimed (updated) and deleted at the rate tasks run: autovacuum is told
# to visit these tables after 1% of their rows changed (default 20%), so dead rows stay few.
_HOT = "WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, fillfactor = 90)"

_V1 = """
CREATE TABLE {s}.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    priority smallint NOT NULL,
    owner text,
    worker text,
    deliveries integer NOT NULL DEFAULT 0,
    payload bytea NOT NULL
) {hot};
CREATE INDEX messages_ready ON {s}.messages (queue, priority DESC, id) WHERE owner IS NULL;
CREATE INDEX messages_leased ON {s}.messages (worker) WHERE owner IS NOT NULL;
CREATE TABLE {s}.delayed (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    eta double precision NOT NULL,
    queue text NOT NULL,
    priority smallint NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX delayed_eta ON {s}.delayed (eta);
CREATE TABLE {s}.workers (
    worker text PRIMARY KEY,
    expires double precision NOT NULL,
    info text
);
CREATE TABLE {s}.dead (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    payload bytea NOT NULL,
    reason text NOT NULL,
    at double precision NOT NULL,
    deliveries integer NOT NULL
);
CREATE TABLE {s}.results (
    task_id text PRIMARY KEY,
    status text NOT NULL,
    meta bytea NOT NULL,
    expires double precision
) {hot};
CREATE INDEX results_expires ON {s}.results (expires) WHERE expires IS NOT NULL;
CREATE TABLE {s}.chord_parts (
    group_id text NOT NULL,
    idx integer NOT NULL,
    meta bytea NOT NULL,
    PRIMARY KEY (group_id, idx)
);
CREATE TABLE {s}.chords (
    group_id text PRIMARY KEY,
    done integer NOT NULL,
    fired_by text,
    expires double precision
);
CREATE TABLE {s}.chord_sizes (
    group_id text PRIMARY KEY,
    size integer NOT NULL,
    added integer NOT NULL
);
CREATE TABLE {s}.worker_beats (
    worker_id text PRIMARY KEY,
    info text NOT NULL,
    expires double precision NOT NULL
);
CREATE TABLE {s}.control (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    command text NOT NULL,
    expires double precision NOT NULL
);
CREATE TABLE {s}.replies (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reply_id text NOT NULL,
    reply text NOT NULL,
    expires double precision NOT NULL
);
CREATE INDEX replies_id ON {s}.replies (reply_id);
CREATE TABLE {s}.rate (
    key text PRIMARY KEY,
    next_free double precision NOT NULL
);
CREATE TABLE {s}.unique_keys (
    key text PRIMARY KEY,
    task_id text NOT NULL,
    held_until double precision NOT NULL
);
CREATE TABLE {s}.revoked (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id text NOT NULL,
    signal text,
    expires double precision NOT NULL
);
CREATE TABLE {s}.beat_leases (
    name text PRIMARY KEY,
    holder text,
    token bigint NOT NULL,
    expires double precision NOT NULL
);
CREATE TABLE {s}.beat_ticks (
    name text NOT NULL,
    entry text NOT NULL,
    last double precision NOT NULL,
    PRIMARY KEY (name, entry)
);
CREATE TABLE {s}.events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body bytea NOT NULL
) {hot};
CREATE TABLE {s}.history (
    task_id text PRIMARY KEY,
    name text,
    state text NOT NULL,
    worker text,
    queue text,
    retries integer NOT NULL DEFAULT 0,
    parent_id text,
    root_id text,
    group_id text,
    received double precision,
    started double precision,
    finished double precision,
    runtime double precision,
    updated double precision NOT NULL,
    args text NOT NULL DEFAULT '',
    meta bytea NOT NULL DEFAULT ''
) {hot};
CREATE INDEX history_updated ON {s}.history (updated);
CREATE INDEX history_state ON {s}.history (state, updated);
CREATE INDEX history_name ON {s}.history (name, updated);
CREATE TABLE {s}.history_counts (
    name text NOT NULL,
    state text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (name, state)
)
"""

# MIGRATIONS[i] takes the tables from version i to version i + 1.
MIGRATIONS: list[str] = [_V1]
VERSION = len(MIGRATIONS)
_LOCK_KEY = 0x63656C65  # the advisory lock migrations take ("cele")


def migrate(conn: Any, schema: str, where: str) -> int:
    """Bring `schema` up to VERSION (creating it on first use); returns the version found."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_KEY, schema))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.schema_version (version integer NOT NULL)")
        row = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchone()
        found = int(row[0]) if row else 0
        if found > VERSION:
            raise ImproperlyConfigured(
                f"the tables in schema {schema!r} of {where} are at version {found}, newer than this "
                f"celeriac understands (version {VERSION}): upgrade celeriac on this machine, or point it "
                "at another schema with the postgres_schema setting")
        for version in range(found, VERSION):
            for statement in MIGRATIONS[version].format(s=schema, hot=_HOT).split(";"):
                if statement.strip():
                    conn.execute(statement)
        if row is None:
            conn.execute(f"INSERT INTO {schema}.schema_version(version) VALUES (%s)", (VERSION,))
        elif found != VERSION:
            conn.execute(f"UPDATE {schema}.schema_version SET version = %s", (VERSION,))
    return found
