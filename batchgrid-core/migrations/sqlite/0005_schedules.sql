-- Schedules and their occurrences. A schedule is a validated job spec (JSON, with its
-- `schedule` block) that the manager fires by itself; `watermark` is the catch-up watermark:
-- every fire time at or before it has been dealt with (fired or dropped). Unix milliseconds.
CREATE TABLE schedules (
    name       TEXT   PRIMARY KEY,
    spec       TEXT   NOT NULL,
    -- 0 or 1: a paused schedule fires nothing.
    paused     BIGINT NOT NULL DEFAULT 0,
    watermark  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per occurrence. The key is what makes an occurrence fire exactly once however many
-- managers run: each inserts the row before it submits anything, and only the insert that
-- created the row goes on; the others find it there and do nothing.
CREATE TABLE schedule_occurrences (
    schedule   TEXT   NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    fire_time  BIGINT NOT NULL,
    -- claimed, started, queued, skipped, failed
    state      TEXT   NOT NULL,
    -- The job it submitted, once it has.
    job_id     TEXT,
    -- 0 or 1: fired by `schedule trigger` rather than by the clock.
    manual     BIGINT NOT NULL DEFAULT 0,
    reason     TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (schedule, fire_time)
);
