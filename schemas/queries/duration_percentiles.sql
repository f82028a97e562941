-- p50 and p95 run duration per flow, in seconds, over its finished runs
-- (duration_seconds is null while a run is open). Nearest-rank percentiles: the
-- smallest duration with at least 50% (95%) of the flow's runs at or below it; the
-- same exact answer in Athena and DuckDB.
WITH ranked AS (
  SELECT
    account_id,
    region,
    flow_name,
    duration_seconds,
    row_number() OVER (PARTITION BY account_id, region, flow_name ORDER BY duration_seconds) AS rank_in_flow,
    count(*) OVER (PARTITION BY account_id, region, flow_name) AS finished_runs
  FROM executions
  WHERE duration_seconds IS NOT NULL
)
SELECT
  account_id,
  region,
  flow_name,
  max(finished_runs) AS finished_runs,
  min(CASE WHEN rank_in_flow >= ceil(0.50 * finished_runs) THEN duration_seconds END) AS p50_seconds,
  min(CASE WHEN rank_in_flow >= ceil(0.95 * finished_runs) THEN duration_seconds END) AS p95_seconds,
  max(duration_seconds) AS max_seconds
FROM ranked
GROUP BY account_id, region, flow_name
ORDER BY p95_seconds DESC, account_id, region, flow_name;
