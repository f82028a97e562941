-- Runs still open (InProgress or CancelStarted, as of the last export) that started
-- more than an hour ago, oldest first.
SELECT
  account_id,
  region,
  flow_name,
  execution_id,
  execution_status,
  started_at,
  current_timestamp - started_at AS open_for
FROM executions
WHERE execution_status IN ('InProgress', 'CancelStarted')
  AND started_at < current_timestamp - INTERVAL '1' HOUR
ORDER BY started_at, account_id, region, flow_name, execution_id;
