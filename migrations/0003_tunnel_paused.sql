-- A tunnel its owner paused through the API stays paused across a hub restart.
ALTER TABLE tunnels ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
