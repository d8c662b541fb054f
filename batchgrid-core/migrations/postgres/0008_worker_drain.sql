-- `batchgrid worker drain ID`: when an operator asked the worker to take no new task and exit
-- after its current ones. The worker polls its own row; NULL means no request.
ALTER TABLE workers ADD COLUMN drain_requested_at BIGINT;
