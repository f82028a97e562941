-- The most frequent error messages of failed runs: how many runs and flows each hit,
-- and when it was last seen.
SELECT
  execution_message,
  count(*) AS runs,
  count(DISTINCT flow_arn) AS flows,
  max(started_at) AS last_seen_at
FROM executions
WHERE execution_status = 'Error' AND execution_message IS NOT NULL
GROUP BY execution_message
ORDER BY runs DESC, execution_message
LIMIT 20;
