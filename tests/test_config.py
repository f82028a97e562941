"""`--config FILE` (TOML) and `appflow-export config --print`: keys are the flags,
flags override the file, unknown keys and bad values are refused naming the file."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO, assert_exit, export, filled_file, read_output, run_export, truth


def effective(*args: str, env: dict | None = None) -> dict:
    result = run_export(["config", "--print", *args], env)
    assert_exit(result, 0)
    return tomllib.loads(result.stdout)


def test_the_example_config_is_valid(tmp_path):
    shown = effective("--config", str(filled_file(REPO / "jobs" / "config.toml", tmp_path)))
    assert shown["dest"] == "s3://my-data-lake/appflow-runs"
    assert shown["region"] == "eu-west-1" and shown["log_format"] == "json"
    assert shown["lookback"] == "1h" and shown["keep_manifests"] == 500


def test_every_key_is_documented_in_the_example():
    every = effective("--dest", "/d", "--flows", "a", "--lookback", "2h", "--max-open-age", "1d",
                      "--concurrency", "2", "--max-attempts", "3", "--region", "eu-west-1",
                      "--role-arn", "arn:aws:iam::111111111111:role/r", "--appflow-endpoint", "http://a",
                      "--s3-endpoint", "http://s", "--s3-path-style", "--shard", "0/2",
                      "--keep-manifests", "3", "--log-format", "json", "--sse", "aws:kms",
                      "--sse-kms-key-id", "arn:aws:kms:eu-west-1:1:key/k", "--expected-bucket-owner", "123456789012",
                      "--skip-unchanged", "--recheck-every", "30m", "--stop-timeout", "10s",
                      "--metrics", "emf", "--job-name", "j")
    every |= effective("--dest", "/d", "--flow-pattern", "a*")
    every |= effective("--dest", "s3://b/p", "--organization", "--role-name", "r", "--accounts", "111111111111",
                       "--exclude-accounts", "222222222222", "--external-id", "x",
                       "--dest-role-arn", "arn:aws:iam::111111111111:role/w", "--dest-region", "eu-west-1",
                       "--target-concurrency", "2")
    example = (REPO / "jobs" / "config.toml").read_text()
    undocumented = [key for key in every if not re.search(rf"^(# )?{key} = ", example, re.M)]
    assert len(every) == 31 and not undocumented, (sorted(every), undocumented)


def test_flags_override_the_file_and_defaults_fill_the_rest(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('dest = "/data/x"\nconcurrency = 4\nlookback = "2h"\nflows = ["a", "b"]\n')
    shown = effective("--config", str(config), "--concurrency", "6", "--log-format", "json")
    assert shown["concurrency"] == 6, "the flag wins"
    assert shown["lookback"] == "2h" and shown["flows"] == ["a", "b"] and shown["dest"] == "/data/x"
    assert shown["max_attempts"] == 20 and shown["max_open_age"] == "7days", "defaults"
    assert shown["log_format"] == "json"
    # Without the file: the flags alone.
    assert effective("--dest", "/d")["concurrency"] == 8


def test_a_run_takes_its_options_from_the_file(emulator, local_dest, tmp_path):
    config = tmp_path / "job.toml"
    config.write_text(f'dest = "{local_dest.uri}"\nappflow_endpoint = "{emulator.url}"\n'
                      f'flows = ["{emulator.flow_names()[0]}"]\n')
    result = run_export(["run", "--config", str(config)])
    assert_exit(result, 0)
    exported = {row["flow_name"] for row in read_output(local_dest.path).executions.values()}
    assert exported == {emulator.flow_names()[0]}
    expected = truth(emulator).only(emulator.flow_names()[0])
    assert len(read_output(local_dest.path).executions) == len(expected.executions)


def test_the_environment_does_not_silently_override_the_file(emulator, local_dest, tmp_path):
    config = tmp_path / "job.toml"
    config.write_text('region = "eu-west-2"\n')
    result = export(emulator, local_dest, "--config", str(config), "--dry-run")
    assert_exit(result, 0)
    assert "AWS_REGION is ignored" in result.stderr and "eu-west-2" in result.stderr, result.stderr


def test_bad_files_are_usage_errors_naming_the_file(emulator, tmp_path):
    cases = {
        'dest = "x"\nlookbak = "1h"\n': "unknown field `lookbak`",
        'dest = "x"\nconcurrency = 0\n': "--concurrency",
        'dest = "x"\nlookback = "soon"\n': "--lookback",
        'dest = "x"\nconcurrency = "eight"\n': "concurrency",
        "dest = \n": "TOML parse error",
    }
    for i, (text, message) in enumerate(cases.items()):
        config = tmp_path / f"bad{i}.toml"
        config.write_text(text)
        result = run_export(["run", "--config", str(config)], {"AWS_ENDPOINT_URL_APPFLOW": emulator.url})
        assert_exit(result, 2)
        assert str(config) in result.stderr and message in result.stderr, (text, result.stderr)
    missing = run_export(["run", "--config", str(tmp_path / "none.toml")])
    assert_exit(missing, 2)
    assert "none.toml" in missing.stderr


def test_a_selection_flag_overrides_the_file_s_other_selection(tmp_path):
    """`--flows` and `--flow-pattern` exclude each other: either on the command line
    replaces both keys of the file."""
    config = tmp_path / "c.toml"
    config.write_text('dest = "/d"\nflows = ["a", "b"]\n')
    shown = effective("--config", str(config), "--flow-pattern", "sales*")
    assert shown["flow_pattern"] == "sales*" and "flows" not in shown
    config.write_text('dest = "/d"\nflow_pattern = "sales*"\n')
    shown = effective("--config", str(config), "--flows", "x")
    assert shown["flows"] == ["x"] and "flow_pattern" not in shown


def test_the_environment_comes_between_the_flags_and_the_file(tmp_path):
    """Order: a flag, then its APPFLOW_EXPORT_* variable, then the config file, then the
    default; `config --print` says where each value came from, in comments (the output
    stays TOML)."""
    config = tmp_path / "c.toml"
    config.write_text('dest = "/from/file"\nconcurrency = 3\nlookback = "2h"\nflows = ["a"]\n')
    env = {"APPFLOW_EXPORT_CONFIG": str(config), "APPFLOW_EXPORT_CONCURRENCY": "5", "APPFLOW_EXPORT_LOOKBACK": "3h",
           "APPFLOW_EXPORT_SKIP_UNCHANGED": "true", "APPFLOW_EXPORT_FLOW_PATTERN": "sales*",
           "APPFLOW_EXPORT_REGION": "eu-west-1,us-east-1"}
    result = run_export(["config", "--print", "--lookback", "4h"], env)
    assert_exit(result, 0)
    shown = tomllib.loads(result.stdout)
    assert shown["lookback"] == "4h", "the flag wins over the environment"
    assert shown["concurrency"] == 5, "the environment wins over the file"
    assert shown["dest"] == "/from/file", "the file wins over the default"
    assert shown["skip_unchanged"] is True and shown["region"] == ["eu-west-1", "us-east-1"]
    assert shown["flow_pattern"] == "sales*" and "flows" not in shown, "a selection in the environment replaces the file's"
    assert shown["max_attempts"] == 20
    sources = dict(re.findall(r"^# (\w+): from (.+)$", result.stdout, re.M))
    assert sources["lookback"] == "the flag --lookback"
    assert sources["concurrency"] == "the environment (APPFLOW_EXPORT_CONCURRENCY)"
    assert sources["dest"] == f"the config file {config}"
    assert sources["max_attempts"] == "the default"
    assert set(sources) == set(shown)


def test_a_run_configured_by_its_environment_alone(emulator, local_dest):
    first = emulator.flow_names()[0]
    env = {"APPFLOW_EXPORT_DEST": local_dest.uri, "APPFLOW_EXPORT_APPFLOW_ENDPOINT": emulator.url,
           "APPFLOW_EXPORT_FLOWS": first, "APPFLOW_EXPORT_LOG_FORMAT": "json"}
    result = run_export(["run"], env)
    assert_exit(result, 0)
    assert all(line.startswith("{") for line in result.stderr.splitlines() if line.strip())
    assert_export_rows = read_output(local_dest.path).executions
    assert set(assert_export_rows) == set(truth(emulator).only(first).executions)


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(emulator):
    result = run_export(["run", "--dest", "/tmp/x"], {"APPFLOW_EXPORT_CONCURRENCY": "eight"})
    assert_exit(result, 2)
    assert "eight" in result.stderr and "APPFLOW_EXPORT_CONCURRENCY" in result.stderr


def test_options_that_exclude_each_other_take_the_higher_source(tmp_path):
    """--flows / --flow-pattern and --role-arn / --organization: the one from the
    higher source (flag, environment, file) wins; from one source they are an error.
    A variable set to false or empty is off."""
    role = "arn:aws:iam::111111111111:role/r"
    shown = effective("--dest", "/d", "--flow-pattern", "x*", env={"APPFLOW_EXPORT_FLOWS": "a"})
    assert shown["flow_pattern"] == "x*" and "flows" not in shown
    shown = effective("--dest", "/d", "--role-arn", role, env={"APPFLOW_EXPORT_ORGANIZATION": "true",
                                                              "APPFLOW_EXPORT_ROLE_NAME": "r"})
    assert shown["role_arn"] == role and shown["organization"] is False
    shown = effective("--dest", "/d", "--role-arn", role, env={"APPFLOW_EXPORT_ORGANIZATION": "false"})
    assert shown["role_arn"] == role and shown["organization"] is False
    shown = effective("--dest", "/d", env={"APPFLOW_EXPORT_DEST_REGION": "", "APPFLOW_EXPORT_SHARD": ""})
    assert "dest_region" not in shown and "shard" not in shown
    # Split between the file and the environment.
    config = tmp_path / "org.toml"
    config.write_text(f'dest = "s3://b/p"\norganization = true\nrole_arn = ["{role}"]\n')
    both = run_export(["config", "--print", "--config", str(config)])
    assert_exit(both, 2)
    assert "exclude each other" in both.stderr and str(config) in both.stderr
    config.write_text('dest = "s3://b/p"\norganization = true\naccounts = ["111111111111"]\n')
    shown = effective("--config", str(config), env={"APPFLOW_EXPORT_ROLE_NAME": "reader"})
    assert shown["organization"] is True and shown["role_name"] == "reader" and shown["accounts"] == "111111111111"
    missing = run_export(["config", "--print", "--config", str(config)])
    assert_exit(missing, 2)
    assert "--organization needs --role-name" in missing.stderr
    alone = run_export(["config", "--print", "--dest", "/d", "--accounts", "111111111111"])
    assert_exit(alone, 2)
    assert "--accounts goes with --organization" in alone.stderr
    # The file's organization turned off by its variable: its role name goes with it.
    config.write_text('dest = "s3://b/p"\norganization = true\nrole_name = "r"\n')
    shown = effective("--config", str(config), "--role-arn", role, env={"APPFLOW_EXPORT_ORGANIZATION": "false"})
    assert shown["organization"] is False and "role_name" not in shown and shown["role_arn"] == role
    twice = run_export(["config", "--print", "--dest", "/d"], {"APPFLOW_EXPORT_FLOWS": "a", "APPFLOW_EXPORT_FLOW_PATTERN": "b*"})
    assert_exit(twice, 2)
    assert "APPFLOW_EXPORT_FLOWS and APPFLOW_EXPORT_FLOW_PATTERN" in twice.stderr


def test_help_names_each_variable():
    result = run_export(["run", "--help"])
    assert_exit(result, 0)
    assert "[env: APPFLOW_EXPORT_DEST=]" in result.stdout and "[env: APPFLOW_EXPORT_TARGET_CONCURRENCY=]" in result.stdout
