"""`appflow-export schema`: the generated DuckDB views and Athena DDL point at the
export and read what the emulator served."""

from __future__ import annotations

import duckdb

import json

import botocore.session
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp
from botocore.validate import validate_parameters

from conftest import CATALOG_COLUMNS, assert_exit, export, run_export, truth

TABLES = ("executions", "catalog_registrations", "flows")


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
    statements = [s for s in result.stdout.split(";\n") if s.strip()]
    assert len(statements) == 3
    for table, ddl in zip(("executions", "catalog_registrations"), statements):
        assert f"CREATE EXTERNAL TABLE IF NOT EXISTS `ops`.`{table}`" in ddl
        assert "PARTITIONED BY (`dt` date)" in ddl
        assert f"LOCATION 's3://my-lake/runs/{table}/'" in ddl
        assert f"'storage.location.template' = 's3://my-lake/runs/{table}/dt=${{dt}}/'" in ddl
        assert "'projection.enabled' = 'true'" in ddl
    flows = statements[2]
    assert "CREATE EXTERNAL TABLE IF NOT EXISTS `ops`.`flows`" in flows
    assert "LOCATION 's3://my-lake/runs/flows/'" in flows
    assert "`tags` map<string,string>" in flows
    assert "PARTITIONED BY" not in flows and "projection" not in flows


def test_schema_refuses_a_bad_destination():
    result = run_export(["schema", "--format", "duckdb", "--dest", "ftp://x/y"])
    assert_exit(result, 2)
    assert "ftp://x/y" in result.stderr


def test_views_load_for_flows_that_register_nothing_in_glue(emulator, local_dest):
    """Flows without Glue registrations still get a (row-less) catalog file per day, so
    the views load and a user's join works."""
    plain = next(f for f in emulator.flows() if not any(r.get("metadataCatalogDetails") for r in f["records"]))
    assert_exit(export(emulator, local_dest, "--flows", plain["definition"]["flowName"]), 0)
    days = {p.parent.name for p in local_dest.path.glob("executions/dt=*/*.parquet")}
    catalog_files = list(local_dest.path.glob("catalog_registrations/dt=*/*.parquet"))
    assert {p.parent.name for p in catalog_files} == days
    with_rows = sorted(local_dest.path.glob("executions/dt=*/*.parquet"))[0]
    for path in catalog_files:
        empty = pq.ParquetFile(path)
        assert empty.metadata.num_rows == 0
        # Typed like any catalog file: the contract's columns, version in the footer.
        assert empty.schema_arrow.names == CATALOG_COLUMNS
        assert empty.schema_arrow.field("started_at").type == pq.read_schema(with_rows).field("started_at").type
        assert empty.metadata.metadata[b"appflow_export.schema_version"] == b"1"
    views = run_export(["schema", "--format", "duckdb", "--dest", local_dest.uri])
    con = duckdb.connect()
    con.execute(views.stdout)
    assert con.execute("SELECT count(*) FROM executions").fetchone()[0] == len(plain["records"])
    assert con.execute("SELECT count(*) FROM catalog_registrations").fetchone()[0] == 0
    columns = [row[0] for row in con.execute("DESCRIBE catalog_registrations").fetchall()]
    assert columns[:4] == ["account_id", "region", "flow_name", "execution_id"] and columns[-1] == "dt"
    assert con.execute("SELECT count(*) FROM executions e JOIN catalog_registrations c "
                       "USING (account_id, region, flow_name, execution_id)").fetchone()[0] == 0


def _within_limits(value, shape, path: str) -> list[str]:
    """What in `value` breaks the model's length limits (botocore's validator checks
    types, required members and minimums, not maximums)."""
    problems = []
    if shape.type_name == "structure":
        for name, member in value.items():
            problems += _within_limits(member, shape.members[name], f"{path}.{name}")
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            problems += _within_limits(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map":
        for k, v in value.items():
            problems += _within_limits(k, shape.key, f"{path} key {k}")
            problems += _within_limits(v, shape.value, f"{path}.{k}")
    elif shape.type_name == "string" and "max" in shape.metadata and len(value) > shape.metadata["max"]:
        problems.append(f"{path}: {len(value)} characters, at most {shape.metadata['max']}")
    return problems


HIVE_OF_ARROW = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint", pa.float64(): "double",
                 pa.timestamp("ms", tz="UTC"): "timestamp"}


def hive_type(arrow_type) -> str:
    if pa.types.is_map(arrow_type):
        return f"map<{hive_type(arrow_type.key_type)},{hive_type(arrow_type.item_type)}>"
    return HIVE_OF_ARROW[arrow_type]


def test_glue_tables_are_valid_create_table_input_for_the_files(emulator, local_dest):
    """Each `--format glue --table T` is a valid Glue CreateTable request by botocore's
    official model, and its columns are the files' columns, in order, with their types."""
    assert_exit(export(emulator, local_dest), 0)
    create_table = botocore.session.get_session().get_service_model("glue").operation_model("CreateTable")
    docs = {t["table"]: t for t in json.loads(run_export(["schema", "--format", "arrow"]).stdout)}
    for table in TABLES:
        result = run_export(["schema", "--format", "glue", "--table", table,
                             "--dest", "s3://my-lake/runs", "--database", "ops"])
        assert_exit(result, 0)
        request = json.loads(result.stdout)
        validate_parameters(request, create_table.input_shape)
        assert not _within_limits(request, create_table.input_shape, "CreateTable")
        table_input = request["TableInput"]
        assert (request["DatabaseName"], table_input["Name"]) == ("ops", table)
        assert table_input["StorageDescriptor"]["Location"] == f"s3://my-lake/runs/{table}/"
        files = sorted(local_dest.path.glob(f"{table}/**/*.parquet"))
        assert files, table
        schema = pq.read_schema(files[0])
        file_columns = [(f.name, hive_type(f.type)) for f in schema]
        glue_columns = [(c["Name"], c["Type"]) for c in table_input["StorageDescriptor"]["Columns"]]
        assert glue_columns == file_columns, table
        partitioned = table != "flows"
        dt_doc = [{"Name": p["name"], "Type": p["type"].lower(), "Comment": p["doc"]} for p in docs[table]["partitioned_by"]]
        assert table_input["PartitionKeys"] == dt_doc and bool(dt_doc) == partitioned
        assert (table_input["Parameters"].get("projection.enabled") == "true") == partitioned
    every = run_export(["schema", "--format", "glue", "--dest", "s3://my-lake/runs"])
    assert [t["TableInput"]["Name"] for t in json.loads(every.stdout)] == list(TABLES)


def test_athena_ddl_parses_as_hive_ddl_with_every_doc_intact():
    """Athena DDL is Hive's grammar (a quote in a string is escaped with a backslash,
    not doubled). sqlglot's Athena dialect parses each statement; the column names,
    types and comments it reads back equal the Arrow schema's."""
    ddl = run_export(["schema", "--format", "athena", "--dest", "s3://my-lake/it's", "--database", "ops"])
    assert_exit(ddl, 0)
    arrow = run_export(["schema", "--format", "arrow"])
    docs = {t["table"]: t for t in json.loads(arrow.stdout)}
    statements = sqlglot.parse(ddl.stdout, read="athena", error_level=sqlglot.ErrorLevel.RAISE)
    assert [s.this.this.name for s in statements] == list(TABLES)
    for statement in statements:
        assert isinstance(statement, exp.Create) and statement.kind == "TABLE", statement.sql()[:200]
        table = docs[statement.this.this.name]
        columns = [(c.name, c.find(exp.CommentColumnConstraint).this.this) for c in statement.find_all(exp.ColumnDef)
                   if c.name != "dt"]
        assert columns == [(f["name"], f["doc"]) for f in table["fields"]]
        location = statement.find(exp.LocationProperty).this.this
        assert location == f"s3://my-lake/it's/{table['table']}/"
