-- Request accounting: each process's cumulative request counts by service and operation.
-- Written only by upserts that keep the larger count, so a late report never lowers a total;
-- the job report sums over processes. Kept in the common subset of SQLite and PostgreSQL.
CREATE TABLE requests (
    process_id TEXT   NOT NULL,
    service    TEXT   NOT NULL,
    operation  TEXT   NOT NULL,
    count      BIGINT NOT NULL,
    PRIMARY KEY (process_id, service, operation)
);
