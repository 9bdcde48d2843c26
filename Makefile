# Every target creates what it needs. `make test` is the README's test command; `make demo` runs the product locally.
PYTHON ?= $(shell tools/find-python)
VENV ?= .venv
SAM_VENV ?= .venv-sam
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint unit demo bench validate build clean

$(STAMP): pyproject.toml functions/rotator/requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .ruff_cache .hypothesis
