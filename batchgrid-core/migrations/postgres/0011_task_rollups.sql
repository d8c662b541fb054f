-- Rollups of done tasks (src/analytics/rollup.rs), so the dashboard and /metrics read a job's
-- task-time distribution and its tasks done per second without scanning its tasks: a job of a
-- million tasks is a few hundred bucket rows and one row per second it ran. record_attempts
-- adds a task to both in the transaction that makes it done.

-- Per stage, tasks and their summed time per log-spaced bucket (8 per power of two, exact
-- below 16 ms).
CREATE TABLE task_time_buckets (
    job_id   TEXT   NOT NULL,
    stage    BIGINT NOT NULL,
    bucket   BIGINT NOT NULL,
    tasks    BIGINT NOT NULL,
    total_ms BIGINT NOT NULL,
    PRIMARY KEY (job_id, stage, bucket)
);

-- Tasks done per second: slot is the second's start in Unix milliseconds.
CREATE TABLE completion_slots (
    job_id TEXT   NOT NULL,
    slot   BIGINT NOT NULL,
    tasks  BIGINT NOT NULL,
    PRIMARY KEY (job_id, slot)
);

-- Backfill from the tasks already done. The bucket is rollup::bucket_of in SQL: e is the
-- position of the highest set bit, the next three bits the sub-bucket.
INSERT INTO task_time_buckets (job_id, stage, bucket, tasks, total_ms)
SELECT job_id, stage, bucket, COUNT(*), SUM(ms)
FROM (SELECT job_id, stage, ms,
             CASE WHEN ms < 16 THEN ms ELSE (e - 2) * 8 + ((ms >> (e - 3)) & 7) END AS bucket
      FROM (SELECT job_id, stage, ms,
             CASE
                 WHEN ms < 32 THEN 4
                 WHEN ms < 64 THEN 5
                 WHEN ms < 128 THEN 6
                 WHEN ms < 256 THEN 7
                 WHEN ms < 512 THEN 8
                 WHEN ms < 1024 THEN 9
                 WHEN ms < 2048 THEN 10
                 WHEN ms < 4096 THEN 11
                 WHEN ms < 8192 THEN 12
                 WHEN ms < 16384 THEN 13
                 WHEN ms < 32768 THEN 14
                 WHEN ms < 65536 THEN 15
                 WHEN ms < 131072 THEN 16
                 WHEN ms < 262144 THEN 17
                 WHEN ms < 524288 THEN 18
                 WHEN ms < 1048576 THEN 19
                 WHEN ms < 2097152 THEN 20
                 WHEN ms < 4194304 THEN 21
                 WHEN ms < 8388608 THEN 22
                 WHEN ms < 16777216 THEN 23
                 WHEN ms < 33554432 THEN 24
                 WHEN ms < 67108864 THEN 25
                 WHEN ms < 134217728 THEN 26
                 WHEN ms < 268435456 THEN 27
                 WHEN ms < 536870912 THEN 28
                 WHEN ms < 1073741824 THEN 29
                 WHEN ms < 2147483648 THEN 30
                 WHEN ms < 4294967296 THEN 31
                 WHEN ms < 8589934592 THEN 32
                 WHEN ms < 17179869184 THEN 33
                 WHEN ms < 34359738368 THEN 34
                 WHEN ms < 68719476736 THEN 35
                 WHEN ms < 137438953472 THEN 36
                 WHEN ms < 274877906944 THEN 37
                 WHEN ms < 549755813888 THEN 38
                 WHEN ms < 1099511627776 THEN 39
                 WHEN ms < 2199023255552 THEN 40
                 WHEN ms < 4398046511104 THEN 41
                 WHEN ms < 8796093022208 THEN 42
                 WHEN ms < 17592186044416 THEN 43
                 WHEN ms < 35184372088832 THEN 44
                 WHEN ms < 70368744177664 THEN 45
                 WHEN ms < 140737488355328 THEN 46
                 WHEN ms < 281474976710656 THEN 47
                 WHEN ms < 562949953421312 THEN 48
                 WHEN ms < 1125899906842624 THEN 49
                 WHEN ms < 2251799813685248 THEN 50
                 WHEN ms < 4503599627370496 THEN 51
                 WHEN ms < 9007199254740992 THEN 52
                 WHEN ms < 18014398509481984 THEN 53
                 WHEN ms < 36028797018963968 THEN 54
                 WHEN ms < 72057594037927936 THEN 55
                 WHEN ms < 144115188075855872 THEN 56
                 WHEN ms < 288230376151711744 THEN 57
                 WHEN ms < 576460752303423488 THEN 58
                 WHEN ms < 1152921504606846976 THEN 59
                 WHEN ms < 2305843009213693952 THEN 60
                 WHEN ms < 4611686018427387904 THEN 61
                 ELSE 62
             END AS e
            FROM (SELECT job_id, stage, CASE WHEN duration_ms > 0 THEN duration_ms ELSE 0 END AS ms
                  FROM tasks WHERE status = 'done' AND duration_ms IS NOT NULL) AS durations) AS exponents) AS buckets
GROUP BY job_id, stage, bucket;

INSERT INTO completion_slots (job_id, slot, tasks)
SELECT job_id, (finished_at / 1000) * 1000, COUNT(*)
FROM tasks WHERE status = 'done' AND finished_at IS NOT NULL
GROUP BY job_id, (finished_at / 1000) * 1000;

-- Workers record attempts, so they keep the rollups too (granted where 0007 created the role).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchgrid_worker') THEN
        GRANT SELECT, INSERT, UPDATE ON task_time_buckets, completion_slots TO batchgrid_worker;
    END IF;
END
$$;
