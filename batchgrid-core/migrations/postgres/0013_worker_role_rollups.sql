-- What the workers' role (0007) needs of the rollups (0011): record_attempts adds each newly
-- done task to task_time_buckets and completion_slots in the transaction that makes it done,
-- so without these grants every attempt a worker records as batchgrid_worker is refused.
-- Adding only (INSERT ... ON CONFLICT DO UPDATE): no DELETE, as for tasks and attempts.
-- Granted only where 0007 could create the role.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchgrid_worker') THEN
        GRANT SELECT, INSERT, UPDATE ON task_time_buckets, completion_slots TO batchgrid_worker;
    END IF;
END
$$;
