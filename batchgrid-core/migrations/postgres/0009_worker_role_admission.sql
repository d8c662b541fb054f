-- What the workers' role (0007) needs of admission (0006): a worker reads its job's pause flag
-- and gives a paused job's task back to admission (a pending row, and the job's counters). It
-- still cannot pause, resume or reprioritise a job (that is a history entry, which it cannot
-- write). Granted only where 0007 could create the role.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchgrid_worker') THEN
        -- The counters only: pausing and reprioritising stay the manager's.
        GRANT SELECT, INSERT (job_id, pending, admitted), UPDATE (pending, admitted) ON job_admission TO batchgrid_worker;
        GRANT SELECT, INSERT, UPDATE ON pending_tasks TO batchgrid_worker;
    END IF;
END
$$;
