-- Admission: SQS has no priorities, so a job's first-stage tasks wait here and the manager
-- admits them to the queue in bounded windows, by priority and fair share (manager/admission.rs).
--
-- One row per job: its priority and pause flag (changeable while it waits or runs) and the
-- counters admission reads every pass, moved in the same transaction as the task rows they
-- count, so no pass scans a 200,000-task backlog.
CREATE TABLE job_admission (
    job_id   TEXT   PRIMARY KEY REFERENCES jobs (id),
    -- 0..100, higher first.
    priority BIGINT NOT NULL DEFAULT 50,
    -- 0 or 1: a paused job is admitted nothing and its delivered tasks are given back.
    paused   BIGINT NOT NULL DEFAULT 0,
    -- Rows below with admitted = 0.
    pending  BIGINT NOT NULL DEFAULT 0,
    -- First-stage rows below with admitted = 1 (sent to the queue).
    admitted BIGINT NOT NULL DEFAULT 0
);

-- Tasks waiting for admission, keyed like `tasks` so a split run again adds nothing twice. A
-- first-stage row stays once admitted (admitted = 1), keeping its body, so tasks lost from
-- the queue are sent again from here rather than by splitting the input again; a later-stage
-- row (a task given back while its job was paused) is removed when admitted.
CREATE TABLE pending_tasks (
    job_id   TEXT   NOT NULL,
    stage    BIGINT NOT NULL,
    task_id  TEXT   NOT NULL,
    -- Order within the job: the chunk's position in the input.
    seq      BIGINT NOT NULL,
    -- The queue message, as it will be sent.
    body     TEXT   NOT NULL,
    admitted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, stage, task_id)
);
CREATE INDEX pending_tasks_next ON pending_tasks (job_id, admitted, stage, seq);
