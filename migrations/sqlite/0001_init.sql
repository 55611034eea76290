-- Tenancy and auth.
CREATE TABLE portals (
    id              INTEGER PRIMARY KEY,
    default_region  TEXT NOT NULL DEFAULT 'US',
    associate       TEXT NOT NULL DEFAULT 'best',
    suffix_digits   INTEGER,
    created_at      INTEGER NOT NULL
);

-- Tokens are stored as SHA-256 hex; the token itself is shown once and never written.
CREATE TABLE tokens (
    hash        TEXT PRIMARY KEY,
    portal_id   INTEGER NOT NULL REFERENCES portals(id),
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A user and its owner. Owner ids come from their own range so that nobody confuses the two.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER NOT NULL UNIQUE,
    portal_id   INTEGER NOT NULL REFERENCES portals(id),
    email       TEXT NOT NULL,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    archived    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX users_portal ON users(portal_id, id);

-- CRM records of every type. Properties are a JSON object of strings, as on HubSpot's wire.
CREATE TABLE objects (
    id            INTEGER PRIMARY KEY,
    portal_id     INTEGER NOT NULL,
    object_type   TEXT NOT NULL,
    properties    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    archived      INTEGER NOT NULL DEFAULT 0,
    archived_at   INTEGER,
    last_call_at  INTEGER
);
CREATE INDEX objects_portal_type ON objects(portal_id, object_type, archived, id);

-- Phone properties of live records, as typed and normalised: what the caller-ID index is built from.
CREATE TABLE phones (
    object_id     INTEGER NOT NULL,
    property      TEXT NOT NULL,
    portal_id     INTEGER NOT NULL,
    object_type   TEXT NOT NULL,
    raw           TEXT NOT NULL,
    e164          TEXT,
    national_key  INTEGER,
    extension     TEXT,
    source        TEXT,
    region        TEXT,
    PRIMARY KEY (object_id, property)
) WITHOUT ROWID;
CREATE INDEX phones_e164 ON phones(portal_id, e164) WHERE e164 IS NOT NULL;
CREATE INDEX phones_national ON phones(portal_id, national_key) WHERE national_key IS NOT NULL;

-- Associations, stored in both directions so either side reads them with one index.
CREATE TABLE associations (
    from_id    INTEGER NOT NULL,
    to_id      INTEGER NOT NULL,
    type_id    INTEGER NOT NULL,
    portal_id  INTEGER NOT NULL,
    from_type  TEXT NOT NULL,
    to_type    TEXT NOT NULL,
    category   TEXT NOT NULL,
    PRIMARY KEY (from_id, to_id, type_id)
) WITHOUT ROWID;

-- Idempotency of inbound-call: one call record per (portal, externalCallId).
CREATE TABLE inbound_calls (
    portal_id         INTEGER NOT NULL,
    external_call_id  TEXT NOT NULL,
    call_id           INTEGER NOT NULL,
    PRIMARY KEY (portal_id, external_call_id)
) WITHOUT ROWID;

-- Numbers a portal never matches.
CREATE TABLE ignored_numbers (
    portal_id   INTEGER NOT NULL,
    e164        TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (portal_id, e164)
) WITHOUT ROWID;
