-- Daily run count and failure rate per flow: the runs each flow started on each UTC
-- day (dt), how many ended in Error, and failure_rate = failed / finished runs
-- (Successful, Error, Canceled; null while none has finished that day).
SELECT
  dt,
  account_id,
  region,
  flow_name,
  count(*) AS runs,
  count_if(execution_status = 'Error') AS failed,
  CAST(count_if(execution_status = 'Error') AS DOUBLE)
    / nullif(count_if(execution_status IN ('Successful', 'Error', 'Canceled')), 0) AS failure_rate
FROM executions
GROUP BY dt, account_id, region, flow_name
ORDER BY dt DESC, account_id, region, flow_name;
