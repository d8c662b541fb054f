-- The grid over time, for the dashboard's grid page: the manager samples the queues and the
-- workers every few seconds and keeps two weeks (src/service/dashboard/samples.rs). In the
-- store, not the manager's memory, so the history survives a manager restart.
CREATE TABLE grid_samples (
    at         BIGINT PRIMARY KEY,
    visible    BIGINT NOT NULL,
    in_flight  BIGINT NOT NULL,
    dead       BIGINT NOT NULL,
    workers    BIGINT NOT NULL,
    tasks_held BIGINT NOT NULL
);
