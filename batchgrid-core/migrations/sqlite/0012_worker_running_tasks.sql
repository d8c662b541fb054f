-- The tasks a worker is running at its last heartbeat, as a JSON list of
-- {job_id, stage, task_id, started_at} (at most 256, the longest running first), replaced by
-- each heartbeat: attempts are recorded only when they end, so this is how the dashboard
-- tells how long a task has been running (stragglers) and what each worker is doing.
ALTER TABLE workers ADD COLUMN running_tasks TEXT NOT NULL DEFAULT '[]';
