-- The analytics store: jobs, their stages and tasks, every attempt, and the workers.
-- Kept in the common subset of SQLite and PostgreSQL so both dialects share one schema;
-- timestamps are Unix milliseconds.
CREATE TABLE jobs (
    id           TEXT   PRIMARY KEY,
    name         TEXT   NOT NULL,
    state        TEXT   NOT NULL,
    spec         TEXT   NOT NULL,
    submitted_at BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    error        TEXT
);

CREATE TABLE stages (
    job_id         TEXT   NOT NULL REFERENCES jobs (id),
    stage          BIGINT NOT NULL,
    name           TEXT   NOT NULL,
    kind           TEXT   NOT NULL,
    -- Unknown until the stage before it has finished (or, for the first, the split).
    expected_tasks BIGINT,
    -- Task counts by status, moved in the same transaction as the task rows they count, so
    -- progress is read without scanning tasks.
    done           BIGINT NOT NULL DEFAULT 0,
    failed         BIGINT NOT NULL DEFAULT 0,
    retrying       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, stage)
);

-- One row per task, written only by upserts keyed by (job, stage, task): a task that runs
-- twice is counted once. status: retrying | done | failed.
CREATE TABLE tasks (
    job_id      TEXT   NOT NULL,
    stage       BIGINT NOT NULL,
    task_id     TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    attempts    BIGINT NOT NULL,
    worker_id   TEXT,
    last_error  TEXT,
    bytes_in    BIGINT NOT NULL DEFAULT 0,
    bytes_out   BIGINT NOT NULL DEFAULT 0,
    duration_ms BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (job_id, stage, task_id)
);
CREATE INDEX tasks_by_status ON tasks (job_id, stage, status);

-- Every finished attempt; the attempt number is the delivery count, so it is unique per task.
CREATE TABLE attempts (
    job_id      TEXT   NOT NULL,
    stage       BIGINT NOT NULL,
    task_id     TEXT   NOT NULL,
    attempt     BIGINT NOT NULL,
    worker_id   TEXT   NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL,
    outcome     TEXT   NOT NULL,
    exit_status BIGINT,
    bytes_in    BIGINT NOT NULL DEFAULT 0,
    bytes_out   BIGINT NOT NULL DEFAULT 0,
    error       TEXT,
    PRIMARY KEY (job_id, stage, task_id, attempt)
);

CREATE TABLE workers (
    id           TEXT   PRIMARY KEY,
    host         TEXT   NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    state        TEXT   NOT NULL,
    tasks_done   BIGINT NOT NULL DEFAULT 0,
    tasks_failed BIGINT NOT NULL DEFAULT 0
);
