# WhyMail — `make run` starts the server on embedded defaults, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration lint fmt coverage bench bench-submission bench-http migrate sysdeps clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install WhyMail with its test tools

sysdeps: ## install the Debian packages the tests use as clients (swaks, isync, mutt)
	bash scripts/install-system-deps.sh

run: $(STAMP) ## run the server on embedded defaults (SMTP 2525, domain localhost)
	$(BIN)/whymail serve --dev

test: $(STAMP) sysdeps ## run every test (unit + integration against local PostgreSQL, Redis, Ray)
	$(BIN)/pytest -ra

test-unit: $(STAMP) ## run the unit tests only
	$(BIN)/pytest -ra tests/unit

test-integration: $(STAMP) sysdeps ## run the integration tests only
	$(BIN)/pytest -ra tests/integration

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .

fmt: $(STAMP) ## format and fix what ruff can
	$(BIN)/ruff format whymail actors gateways tests bench
	$(BIN)/ruff check --fix .

coverage: $(STAMP) sysdeps ## tests with a coverage report
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report --include='whymail/*,actors/*,gateways/*'

bench: $(STAMP) ## SMTP delivery benchmark (writes bench/results/*.json)
	$(BIN)/python bench/smtp_delivery.py

bench-submission: $(STAMP) ## submission + relay to a local smtp-sink benchmark (issue 5; bench/results/)
	$(BIN)/python bench/submission_relay.py

bench-http: $(STAMP) ## HTTP API benchmark: cached and database-backed reads, 50 connections (issue 6; bench/results/)
	$(BIN)/python bench/http_api.py

migrate: $(STAMP) ## apply pending migrations to the configured (or embedded) database
	$(BIN)/whymail migrate up

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
