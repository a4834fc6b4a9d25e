# miniZON — every command a developer or CI needs. `make help` lists them.

CARGO ?= cargo
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/minizon_test

# `make up` / `make soak`: cargo profile of the binaries (dev or release) and where cargo puts them.
PROFILE ?= dev
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN_DIR = $(TARGET_DIR)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: help run build test up down build-bins soak soak-smoke lint fmt run-loms bench bench-smoke run-product-service run-checkout seed-stock kafka kafka-install run-notifications test-events

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

run: ## the whole system in one process: SQLite under data/, an embedded Kafka-protocol broker, sample catalog and stock
	$(CARGO) run -p minizon -- dev

build: ## build every binary
	$(CARGO) build --workspace --bins

build-bins: ## every binary of the workspace in one build (one feature set), PROFILE=dev (default) or release
	$(CARGO) build --workspace --bins --profile $(PROFILE)

up: build-bins kafka-install ## the production topology in the background: broker, LOMS_REPLICAS LOMS (default 1), ProductService, Checkout, Notifications on PostgreSQL; logs in data/up/
	$(BIN_DIR)/minizon-bench up --bin-dir $(BIN_DIR)

down: ## stop exactly what `make up` started (its pid files in data/up/)
	@if [ -x $(BIN_DIR)/minizon-bench ]; then $(BIN_DIR)/minizon-bench down; else $(CARGO) run -q -p minizon-bench -- down; fi

soak: build-bins kafka-install ## the fault suite: 10,000 orders while LOMS replicas, Notifications, the broker and the webhook fail; prints a table, fails unless every count is zero
	$(BIN_DIR)/minizon-bench soak --bin-dir $(BIN_DIR) --report $(TARGET_DIR)/soak.md $(SOAK_ARGS)

soak-smoke: build-bins kafka-install ## the fault suite in a few minutes (300 orders, one fault of each kind), as CI runs it
	$(BIN_DIR)/minizon-bench soak --bin-dir $(BIN_DIR) --run-dir data/soak-smoke --port-base 27200 \
	  --orders 300 --clients 16 --fault-window 30s --loms-kills 1 --notifications-kills 1 \
	  --broker-pause 5s --receiver-outage 10s --settle-timeout 180s --report $(TARGET_DIR)/soak-smoke.md $(SOAK_ARGS)

test: kafka-install ## run every test: all crates on PostgreSQL, then the end-to-end suites again on SQLite
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

run-product-service: ## the local ProductService on 127.0.0.1:50053, bundled catalog (token: testtoken)
	$(CARGO) run -p product-service

run-checkout: ## Checkout on 127.0.0.1:50052 and the local PostgreSQL, using LOMS and ProductService
	$(CARGO) run -p checkout

seed-stock: ## load samples/stock.csv into the local LOMS database (start LOMS once first, to migrate it)
	$(CARGO) run -p loms -- stock import samples/stock.csv

bench: ## the benchmark: release build, PostgreSQL and SQLite, 8 and 32 clients (minutes); target/bench/full/
	scripts/bench.sh full

bench-smoke: ## the benchmark in seconds (debug build, 2 clients), so that it never rots; target/bench/smoke/
	scripts/bench.sh smoke

kafka-install: ## install the tansu broker (Kafka-compatible) into ~/.cache/minizon/tansu if absent; the event tests need it
	scripts/kafka.sh install

kafka: ## a standalone Kafka-compatible broker (tansu) on 127.0.0.1:9092 with the order-event topics; data in data/kafka
	scripts/kafka.sh start

run-notifications: ## Notifications on the local PostgreSQL and the broker of `make kafka`, log sink (see --help for Telegram / webhook)
	$(CARGO) run -p notifications

test-events: kafka-install ## the event tests alone: outbox relay, broker outages, Notifications (PostgreSQL + a tansu per test)
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(CARGO) test -p minizon-tests --test events
