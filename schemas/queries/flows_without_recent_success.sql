-- Flows whose last successful run started more than a day ago, or that have no
-- successful run in the export at all (last_success_at null, listed first). Deleted
-- flows (no longer listed, or in AWS's Deleted status) are left out.
SELECT
  f.account_id,
  f.region,
  f.flow_name,
  f.flow_status,
  f.trigger_type,
  max(e.started_at) AS last_success_at
FROM flows f
LEFT JOIN executions e
  ON e.account_id = f.account_id AND e.region = f.region AND e.flow_name = f.flow_name
  AND e.execution_status = 'Successful'
WHERE f.deleted_at IS NULL AND coalesce(f.flow_status, '') <> 'Deleted'
GROUP BY f.account_id, f.region, f.flow_name, f.flow_status, f.trigger_type
HAVING max(e.started_at) IS NULL OR max(e.started_at) < current_timestamp - INTERVAL '1' DAY
ORDER BY last_success_at NULLS FIRST, f.account_id, f.region, f.flow_name;
