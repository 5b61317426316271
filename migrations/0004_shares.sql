-- Shares: capability links to one tunnel. The token itself is not kept, only its SHA-256,
-- so the database holds no live links; revoked shares stay to answer 410.
CREATE TABLE IF NOT EXISTS shares (
    id TEXT PRIMARY KEY,
    tunnel_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT,
    methods TEXT,
    rate_per_min INTEGER,
    created INTEGER NOT NULL,
    expires INTEGER,
    revoked INTEGER);
