-- A job's history: every state change and operator action, written in the same transaction as
-- the guarded update of `jobs.state` it records. `seq` orders one job's entries; it is taken
-- while that job's row is locked by the update, so concurrent writers cannot share a number.
CREATE TABLE job_history (
    job_id     TEXT   NOT NULL REFERENCES jobs (id),
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    -- NULL for the entry that records the submission itself.
    from_state TEXT,
    to_state   TEXT   NOT NULL,
    reason     TEXT,
    -- Who asked: `manager`, `operator`, ...
    actor      TEXT   NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Jobs that existed before the history began get their submission as the first entry.
INSERT INTO job_history (job_id, seq, at, from_state, to_state, reason, actor)
SELECT id, 1, submitted_at, NULL, 'submitted', NULL, 'manager' FROM jobs;
