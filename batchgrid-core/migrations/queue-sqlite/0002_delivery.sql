-- Receipts name a delivery by this counter, which never goes back: the receive count does
-- (redrive resets it), and a receipt from before a redrive would otherwise match a later
-- delivery and let a stale worker delete or extend a message another worker now holds.
ALTER TABLE messages ADD COLUMN delivery INTEGER NOT NULL DEFAULT 0;
