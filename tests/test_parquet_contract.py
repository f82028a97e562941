"""What Athena engine v3 and schema evolution need of the files, checked in their
footers with pyarrow (no Athena here) and across versions with DuckDB."""

from __future__ import annotations

import re
import shutil

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import assert_exit, export, truth

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
# Physical/logical pairs Athena engine v3 reads without surprises.
ALLOWED = {("BYTE_ARRAY", "String"), ("INT32", "None"), ("INT64", "None"), ("DOUBLE", "None"),
           ("INT64", "Timestamp(isAdjustedToUTC=true, timeUnit=milliseconds, is_from_converted_type=false, force_set_converted_type=false)")}


def data_files(root):
    return sorted([*root.glob("*/dt=*/*.parquet"), *root.glob("flows/*.parquet")])


def test_footers_are_what_athena_v3_reads(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    files = data_files(local_dest.path)
    assert {p.relative_to(local_dest.path).parts[0] for p in files} == {"executions", "catalog_registrations", "flows"}
    for path in files:
        meta = pq.ParquetFile(path).metadata
        kv = {k.decode(): v.decode() for k, v in (meta.metadata or {}).items()}
        assert kv.get("appflow_export.schema_version") == "1", f"{path}: no schema version in the footer"
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        assert "dt" not in names, f"{path}: dt is the folder's partition, not a column"
        for i, name in enumerate(names):
            col = meta.schema.column(i)
            assert SNAKE.match(name), f"{path}: column {name} is not lower-case snake_case"
            kind = (col.physical_type, str(col.logical_type))
            assert kind in ALLOWED, f"{path}: column {name} is {kind}"
            if name.endswith("_at") or name.endswith("_time"):
                assert kind[1].startswith("Timestamp(isAdjustedToUTC=true, timeUnit=milliseconds"), f"{path}: {name} is {kind}"
        if path.parent.name == "flows":
            # map<string,string> as Athena reads it: the standard three-level MAP.
            assert ("optional group field_id=-1 tags (Map) {\n"
                    "    repeated group field_id=-1 key_value {\n"
                    "      required binary field_id=-1 key (String);\n"
                    "      optional binary field_id=-1 value (String);") in str(pq.ParquetFile(path).schema), path
        if meta.num_rows == 0:
            continue  # a day's catalog file when no run registered anything: no row group
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert meta.row_group(0).column(0).statistics is not None, f"{path}: no column statistics"


def test_files_of_an_older_schema_read_with_current_ones(emulator, local_dest):
    """Policy: new versions only add nullable columns. A file written before a column
    existed reads beside current files with `union_by_name`, the column null there."""
    expected = truth(emulator)
    assert_exit(export(emulator, local_dest), 0)
    files = sorted((local_dest.path / "executions").glob("dt=*/*.parquet"))
    older = files[0]
    table = pq.read_table(older)
    old_rows = table.num_rows
    # The same rows as an older version would have written them: one column fewer.
    pq.write_table(table.drop_columns(["max_page_size"]), older.with_name("older.parquet"))
    older.unlink()
    con = duckdb.connect()
    glob = f"{local_dest.path}/executions/*/*.parquet"
    rows = con.execute(
        f"SELECT count(*), count(*) FILTER (max_page_size IS NULL AND filename LIKE '%older.parquet') "
        f"FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true, filename = true)"
    ).fetchone()
    assert rows == (len(expected.executions), old_rows)


# Nearly distinct in every row: written plain (a dictionary would hold each value again).
PLAIN = {"execution_id", "started_at", "last_updated_at", "data_pull_start_time", "data_pull_end_time",
         "bytes_processed", "bytes_written", "records_processed", "duration_seconds"}


def test_ids_times_and_counts_are_written_plain_and_repeated_values_with_a_dictionary(emulator, local_dest):
    assert_exit(export(emulator, local_dest), 0)
    checked = set()
    for table in ("executions", "catalog_registrations"):
        for path in sorted((local_dest.path / table).glob("dt=*/*.parquet")):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                for i in range(meta.num_columns):
                    chunk = meta.row_group(g).column(i)
                    name = meta.schema.column(i).name
                    if name in PLAIN:
                        assert not chunk.has_dictionary_page, f"{path}: {name} has a dictionary"
                    elif name in ("flow_name", "account_id", "execution_status", "catalog_type"):
                        assert chunk.has_dictionary_page, f"{path}: {name} has no dictionary"
                    checked.add((table, name))
    assert {("executions", "execution_id"), ("executions", "flow_name"),
            ("catalog_registrations", "started_at"), ("catalog_registrations", "catalog_type")} <= checked
