-- Webhooks: where a user's events are POSTed, which ones, and the secret that signs them.
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created INTEGER NOT NULL);
