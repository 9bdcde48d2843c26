# Every target creates what it needs. `make test` is the README's test command; `make demo` runs the product locally.
PYTHON ?= $(shell tools/find-python)
VENV ?= .venv
SAM_VENV ?= .venv-sam
# tools/sam_local/host_network.py patches this SAM CLI version's container creation (and checks it still can).
SAM_CLI_VERSION ?= 1.170.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help docs mutation test lint demo serve bench bench-fleet bench-import bench-cold validate build lock clean package-check sam-local
.DEFAULT_GOAL := help

help:  ## this list
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The dev tools (KSM emulator, sandbox) are not part of the package: they run from tools/ in this checkout.
DEV := PYTHONPATH=$(CURDIR)/tools $(BIN)/python

lint: $(STAMP)  ## ruff, ruff format --check, mypy --strict, code shape, declared dependencies
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python tools/check_code_shape.py
	$(BIN)/python tools/check_dependencies.py

test: lint  ## lint, then every test (unit, fault matrix, emulator, CLI, e2e, doc transcripts)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The product end to end on this machine: moto server + the KSM emulator on loopback, the handler in a subprocess.
demo: $(STAMP)  ## the product end to end on this machine (moto + KSM emulator, the real handler, 4 triggers)
	$(DEV) -m rotator_sandbox demo $(DEMO_ARGS)

# moto server + the KSM emulator, seeded, until Ctrl-C; prints the exports that point the CLI at them.
serve: $(STAMP)  ## a sandbox stack for the CLI until Ctrl-C; prints the exports that point the CLI at it
	$(DEV) -m rotator_sandbox serve $(SERVE_ARGS)

# README.md and docs/*.md: the CLI transcripts (run against `serve`), the demo sample, the environment tables.
docs: $(STAMP)  ## regenerate the transcripts and tables in README.md and docs/ (tests/test_docs.py checks them)
	$(DEV) tools/generate_docs.py

# Each mutant of the core runs the tests that execute its line; the score and the survivors are in the README.
mutation: $(STAMP)  ## mutation testing of rotation.py, binding.py, due.py, journal.py (its own target: not in make test)
	$(DEV) tools/mutation.py $(MUTATION_ARGS)

bench: $(STAMP)  ## rotation throughput and CPU per record against the sandbox (BENCH_ARGS=...)
	$(DEV) -m rotator_sandbox bench $(BENCH_ARGS)

# A fleet end to end: 10 accounts, scheduled runs (again while they defer records for the Keeper budget), the rotation
# queue worked by warm handler processes, over FLEET_DEVICES KSM client devices; Keeper's throttling as the sandbox's
# default, or BENCH_ARGS="--throttle burst=100,quiet=10" / "--rate-limit 10/2" (Keeper's 10/60, 30 times faster).
FLEET_RECORDS ?= 10000
FLEET_DEVICES ?= 1
bench-fleet: $(STAMP)  ## a fleet (FLEET_RECORDS=10000 over 10 accounts, FLEET_DEVICES=1) through the rotation queue
	$(DEV) -m rotator_sandbox fleet --records $(FLEET_RECORDS) --accounts 10 --devices $(FLEET_DEVICES) $(BENCH_ARGS)

clean:  ## remove the virtual environments and build/test caches
	rm -rf $(VENV) $(SAM_VENV) .venv-package .aws-sam .pytest_cache .ruff_cache .hypothesis

# What an operator gets from a plain `pip install .`: the console script works, every installed module imports.
package-check:  ## a plain pip install . in a fresh venv: the console script runs, modules import
	rm -rf .venv-package && $(PYTHON) -m venv .venv-package
	.venv-package/bin/python -m pip install --quiet .
	.venv-package/bin/keeper-iam-rotator --help > /dev/null
	cd / && $(CURDIR)/.venv-package/bin/python -I $(CURDIR)/tools/check_installed.py

# SAM CLI lives in its own environment: it pins boto3/click versions the app must not inherit.
$(SAM_VENV)/.installed:
	test -x $(SAM_VENV)/bin/python || python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION) cfn-lint
	touch $@

validate: $(SAM_VENV)/.installed  ## sam validate --lint, sam validate, cfn-lint (installs SAM CLI in .venv-sam)
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint
	SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --region us-east-1
	$(SAM_VENV)/bin/cfn-lint template.yaml member-account.yaml

# sam build runs functions/rotator/Makefile with the runtime's Python (3.13) on PATH: arm64 wheels from the hashed
# lock, then bytecode. The check fails the build if any module of the artifact lacks its unchecked-hash .pyc.
build: validate  ## validate, then sam build (arm64, python3.13) and check the artifact has its bytecode
	PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam build
	$(PYTHON) tools/check_artifact.py .aws-sam/build/RotatorFunction

# The built arm64 artifact in a Lambda container, for real: `sam local invoke` with every shipped event and
# `sam local start-api` with a signed POST, against moto + the KSM emulator on 127.0.0.1, judged by the state after each
# step (never by SAM's exit code). Installs missing Debian packages, starts a Docker daemon when none runs (and stops
# it), builds a stand-in Lambda base image when AWS's is absent. SAM_LOCAL_ARGS="--base official" pulls AWS's instead.
sam-local: build $(STAMP)  ## the arm64 artifact in a Lambda container (Docker, SAM CLI) with every shipped event, judged by state
	$(DEV) -m sam_local --sam-python $(SAM_VENV)/bin/python $(SAM_LOCAL_ARGS)

# The artifact's lock: requirements.in regenerated from pyproject.toml, then every package pinned with its hashes,
# resolved for Lambda's python3.13 on manylinux aarch64.
lock: $(STAMP)  ## regenerate requirements.in from pyproject.toml and the artifact's hashed lock
	$(BIN)/python tools/check_dependencies.py --write
	cd functions/rotator && ../../$(BIN)/uv pip compile requirements.in --quiet --generate-hashes --only-binary :all: \
		--python-version 3.13 --python-platform aarch64-manylinux_2_28 -o requirements.txt

bench-import: $(STAMP)  ## the handler's import time against a bare import boto3
	$(DEV) tools/bench_import.py

# Lambda-like cold start of the built artifact (fresh python3.13, the artifact as /var/task, no bytecode writing) to
# the first result of a one-record rotation against the sandbox, next to a bare `import boto3` and a warm invocation.
# BENCH_COLD_ARGS="--baseline <another build dir>" runs an older artifact alternately in the same run.
# The arm64 artifact cannot run here unless this machine is arm64, so the bench runs its twin: the same Makefile and
# lock, with this machine's wheels.
HOST_ARCH := $(shell uname -m)
bench-cold: build  ## Lambda-like cold start of the built artifact
	rm -rf .aws-sam/bench-cold && $(MAKE) --no-print-directory -C functions/rotator build-RotatorFunction \
		PYTHON=$(PYTHON) ARTIFACTS_DIR=$(CURDIR)/.aws-sam/bench-cold \
		PLATFORMS="--platform manylinux2014_$(HOST_ARCH) --platform manylinux_2_28_$(HOST_ARCH)"
	$(PYTHON) tools/check_artifact.py .aws-sam/bench-cold
	$(DEV) tools/bench_cold.py --python $(PYTHON) $(BENCH_COLD_ARGS) .aws-sam/bench-cold
