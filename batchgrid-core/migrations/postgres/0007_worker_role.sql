-- The role workers connect as, so that no worker holds the owner's (RDS master) credentials.
-- A worker records attempts, task outcomes, stage counters, its own heartbeat and its request
-- counts, and reads jobs and stages; it cannot create, change the state or spec of, or delete
-- a job, touch its history or the schedules, or change the schema. On RDS it logs in with an
-- IAM token (`rds_iam`); on a server without that role it logs in however the server says
-- (trust on a development machine, or a password an operator sets).
--
-- Roles belong to the whole server, databases do not: the role is created once, by whichever
-- database migrates first, and every database grants to it. An owner that may not create
-- roles (an external database) keeps working: the grid then needs workers to connect as the
-- owner, and a notice says why.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchgrid_worker') THEN
        BEGIN
            CREATE ROLE batchgrid_worker LOGIN;
        EXCEPTION
            -- Another database of the same server created it meanwhile.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'batchgrid: % may not create role batchgrid_worker; workers must connect as the owner',
                    current_user;
                RETURN;
        END;
    END IF;

    GRANT SELECT ON jobs, stages, _sqlx_migrations TO batchgrid_worker;
    GRANT UPDATE ON stages TO batchgrid_worker;
    GRANT SELECT, INSERT, UPDATE ON tasks, attempts, workers, requests TO batchgrid_worker;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO batchgrid_worker;
    END IF;
END
$$;
