"""`appflow-export schema`: the generated DuckDB views and Athena DDL point at the
export and read what the emulator served."""

from __future__ import annotations

import duckdb

from conftest import assert_exit, export, run_export, truth


def test_duckdb_views_read_the_export(emulator, local_dest):
    expected = truth(emulator)
    assert_exit(export(emulator, local_dest), 0)
    views = run_export(["schema", "--format", "duckdb", "--dest", local_dest.uri])
    assert_exit(views, 0)
    con = duckdb.connect()
    con.execute(views.stdout)

    def one(sql: str):
        return con.execute(sql).fetchone()[0]

    assert one("SELECT count(*) FROM executions") == len(expected.executions)
    assert one("SELECT count(*) FROM catalog_registrations") == len(expected.catalog)
    # dt is the partition column, a date equal to the UTC date of started_at.
    assert one("SELECT typeof(dt) FROM executions LIMIT 1") == "DATE"
    mismatched = one("SELECT count(*) FROM executions WHERE dt <> CAST(timezone('UTC', started_at) AS DATE)")
    assert mismatched == 0
    # The two views join on the run.
    joined = one("SELECT count(*) FROM catalog_registrations c JOIN executions e USING (account_id, region, flow_name, execution_id)")
    assert joined == len(expected.catalog)


def test_athena_ddl_points_at_the_destination():
    result = run_export(["schema", "--format", "athena", "--dest", "s3://my-lake/runs/", "--database", "ops"])
    assert_exit(result, 0)
    ddl = result.stdout
    for table in ("executions", "catalog_registrations"):
        assert f"CREATE EXTERNAL TABLE IF NOT EXISTS `ops`.`{table}`" in ddl
        assert f"LOCATION 's3://my-lake/runs/{table}/'" in ddl
        assert f"'storage.location.template' = 's3://my-lake/runs/{table}/dt=${{dt}}/'" in ddl
    assert ddl.count("'projection.enabled' = 'true'") == 2


def test_schema_refuses_a_bad_destination():
    result = run_export(["schema", "--format", "duckdb", "--dest", "ftp://x/y"])
    assert_exit(result, 2)
    assert "ftp://x/y" in result.stderr
