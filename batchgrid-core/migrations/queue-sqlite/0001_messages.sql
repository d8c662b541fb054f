-- The embedded task queue: one table for every queue and its dead-letter queue.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    -- Unix milliseconds from which the message may be received.
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    sent_at       INTEGER NOT NULL,
    -- Why it was dead-lettered, when it was.
    reason        TEXT
);

-- Receive is an index seek on (queue, visible_at): its cost does not grow with the backlog.
CREATE INDEX messages_by_visibility ON messages (queue, visible_at, id);
