-- Users, tunnel records and their live index, as the store first created them (hubs made
-- before versioned migrations already have these: IF NOT EXISTS keeps them as they are).
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    key_salt BLOB NOT NULL,
    key_hash BLOB NOT NULL,
    created INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS tunnels (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    target TEXT NOT NULL,
    hub_port INTEGER,
    public INTEGER NOT NULL,
    pool INTEGER NOT NULL,
    shared_all INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    launch_time INTEGER,
    last_connected INTEGER,
    shutdown_time INTEGER,
    shutdown_reason TEXT,
    user_shutdown INTEGER);

CREATE INDEX IF NOT EXISTS tunnels_live ON tunnels (owner, name) WHERE shutdown_time IS NULL;
