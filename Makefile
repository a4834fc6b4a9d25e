# miniZON — every command a developer or CI needs. `make help` lists them.

CARGO ?= cargo
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/minizon_test

.PHONY: help build test lint fmt run-loms

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build every binary
	$(CARGO) build --workspace --bins

test: ## run every test: all crates on PostgreSQL, then the end-to-end suites again on SQLite
	psql "$(dir $(TEST_DATABASE_URL))postgres" -qc 'drop database if exists minizon_test with (force)' >/dev/null
	rm -rf "$${TMPDIR:-/tmp}/minizon-tests"
	TEST_BACKEND=postgres TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(CARGO) test --workspace --no-fail-fast
	TEST_BACKEND=sqlite TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(CARGO) test -p minizon-tests --no-fail-fast

lint: ## clippy with warnings as errors, and formatting
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

run-loms: ## LOMS alone on the local PostgreSQL (admin token: dev-admin-token)
	LOMS_ADMIN_TOKEN=$${LOMS_ADMIN_TOKEN:-dev-admin-token} $(CARGO) run -p loms -- serve
