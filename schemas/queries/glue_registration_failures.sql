-- Glue Data Catalog registrations that failed: one row per failed table or partition
-- registration of a run (ordinal: which catalog detail of the run), with AWS's
-- message, newest first.
SELECT account_id, region, flow_name, execution_id, started_at, ordinal, table_name,
       'table' AS registration, table_registration_message AS message
FROM catalog_registrations
WHERE table_registration_status = 'Error'
UNION ALL
SELECT account_id, region, flow_name, execution_id, started_at, ordinal, table_name,
       'partition' AS registration, partition_registration_message AS message
FROM catalog_registrations
WHERE partition_registration_status = 'Error'
ORDER BY started_at DESC, account_id, region, flow_name, execution_id, ordinal, registration;
