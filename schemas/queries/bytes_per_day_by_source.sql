-- Bytes and records moved per UTC day (dt) per source connector type (from the flows
-- table; null for runs of a flow the flows table has never seen).
SELECT
  e.dt,
  f.source_connector_type,
  count(*) AS runs,
  sum(e.bytes_processed) AS bytes_processed,
  sum(e.bytes_written) AS bytes_written,
  sum(e.records_processed) AS records_processed
FROM executions e
LEFT JOIN flows f
  ON f.account_id = e.account_id AND f.region = e.region AND f.flow_name = e.flow_name
GROUP BY e.dt, f.source_connector_type
ORDER BY e.dt DESC, bytes_written DESC, f.source_connector_type;
