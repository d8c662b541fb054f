-- The tasks a worker holds at its last heartbeat (running or received and about to run), for
-- `batchgrid grid status` and the dashboard: the worker reports it, nobody counts it.
ALTER TABLE workers ADD COLUMN current_tasks BIGINT NOT NULL DEFAULT 0;
