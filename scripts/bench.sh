#!/usr/bin/env bash
# The benchmark, end to end: builds the binaries, starts LOMS (and, with BENCH_CHECKOUT=1, ProductService and
# Checkout) on fresh databases on ports of its own, initialises a pgbench scratch database, runs the load generator
# (which seeds stock, runs every scenario next to its same-run baseline, and reads each service's peak RSS), and
# writes the reports to target/bench/<mode>/.
#
#   scripts/bench.sh full    # `make bench`: release build, 8 and 32 clients, 100,000-order sweep (minutes)
#   scripts/bench.sh smoke   # `make bench-smoke`: debug build, 2 clients, 1 s per scenario (seconds; CI)
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres) and pgbench. Every knob below can be set from the
# environment, e.g. BENCH_CLIENTS=16 BENCH_DURATION=30s scripts/bench.sh full; BENCH_ARGS adds flags of
# `minizon-bench run` (e.g. BENCH_ARGS="--cart-lines 1").
# BENCH_LOMS runs another LOMS binary (an older build, for a same-machine before/after; see docs/benchmarks.md).
# BENCH_INSTRUMENTATION=off runs LOMS without its metrics endpoint and with OpenTelemetry off (OTEL_SDK_DISABLED):
# the other half of a same-binary measurement of what the instrumentation costs.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-full}"
case "$mode" in
  full)
    profile=release
    clients="${BENCH_CLIENTS:-8,32}"
    warmup="${BENCH_WARMUP:-2s}"
    duration="${BENCH_DURATION:-8s}"
    sweep_orders="${BENCH_SWEEP_ORDERS:-100000}"
    pgbench_scale="${BENCH_PGBENCH_SCALE:-32}"
    backends="${BENCH_BACKENDS:-postgres sqlite}"
    # Below 32768, outside Linux's ephemeral range, so no outgoing connection holds a port the services need.
    port_base="${BENCH_PORT_BASE:-26050}"
    ;;
  smoke)
    profile=dev
    clients="${BENCH_CLIENTS:-2}"
    warmup="${BENCH_WARMUP:-200ms}"
    duration="${BENCH_DURATION:-1s}"
    sweep_orders="${BENCH_SWEEP_ORDERS:-300}"
    pgbench_scale="${BENCH_PGBENCH_SCALE:-1}"
    backends="${BENCH_BACKENDS:-postgres sqlite}"
    port_base="${BENCH_PORT_BASE:-26060}"
    ;;
  *)
    echo "usage: $0 [full|smoke]" >&2
    exit 2
    ;;
esac

pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
token="bench-admin-token"
target_dir="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = release ]; then bin="$target_dir/release"; else bin="$target_dir/debug"; fi
out="${BENCH_OUT:-target/bench/$mode}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Reports of an earlier run must not pass for this one's.
rm -f "$out"/report-*.json "$out"/report-*.md "$out"/compare.md
log() { printf '\n== %s\n' "$*" >&2; }

# Services this script started, stopped (by their own pid) however the script ends.
pids=()
stop_services() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_services EXIT

log "build ($profile)"
packages=(-p loms -p minizon-bench)
if [ "${BENCH_CHECKOUT:-0}" = 1 ]; then packages+=(-p checkout -p product-service); fi
"${CARGO:-cargo}" build --profile "$profile" "${packages[@]}"

psql_admin() { psql "$pg/postgres" -qAt -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

pgbench_args=()
if command -v "${BENCH_PGBENCH:-pgbench}" >/dev/null; then
  log "pgbench scratch database (scale $pgbench_scale)"
  pgbench_db="minizon_bench_pgbench_$mode"
  psql_admin "drop database if exists $pgbench_db with (force)"
  psql_admin "create database $pgbench_db"
  "${BENCH_PGBENCH:-pgbench}" -i -q -s "$pgbench_scale" "$pg/$pgbench_db" 2>&1 | tail -n 1 >&2
  pgbench_args=(--pgbench "$(command -v "${BENCH_PGBENCH:-pgbench}")" --pgbench-database-url "$pg/$pgbench_db")
else
  log "pgbench not found: the database baseline is skipped"
fi

for backend in $backends; do
  case "$backend" in
    postgres)
      loms_db="minizon_bench_loms_$mode"
      psql_admin "drop database if exists $loms_db with (force)"
      loms_url_db="$pg/$loms_db"   # LOMS creates and migrates it
      ;;
    sqlite)
      rm -f "$out"/loms.sqlite*
      loms_url_db="sqlite://$out/loms.sqlite"
      ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac

  log "LOMS on $backend"
  loms_addr="127.0.0.1:$((port_base + 1))"
  loms_metrics_addr="127.0.0.1:$((port_base + 4))" otel_disabled=false
  if [ "${BENCH_INSTRUMENTATION:-on}" = off ]; then loms_metrics_addr=off otel_disabled=true; fi
  # The outbox relay is off: no Kafka broker in this set-up. Events are still written to the outbox in every
  # order transaction, so their cost is measured; publishing them is not.
  LOMS_LISTEN="$loms_addr" LOMS_DATABASE_URL="$loms_url_db" LOMS_ADMIN_TOKEN="$token" LOMS_OUTBOX_RELAY=false LOMS_METRICS_ADDR="$loms_metrics_addr" \
    OTEL_SDK_DISABLED="$otel_disabled" RUST_LOG="${BENCH_SERVICE_LOG:-info}" "${BENCH_LOMS:-$bin/loms}" serve >"$out/loms-$backend.log" 2>&1 &
  loms_pid=$!
  pids+=("$loms_pid")
  "$bin/minizon-bench" wait "http://$loms_addr" --timeout 60s
  watch=(--watch "loms=$loms_pid")

  checkout_args=()
  if [ "${BENCH_CHECKOUT:-0}" = 1 ]; then
    log "ProductService and Checkout"
    product_addr="127.0.0.1:$((port_base + 3))"
    checkout_addr="127.0.0.1:$((port_base + 2))"
    checkout_db="minizon_bench_checkout_$mode"
    psql_admin "drop database if exists $checkout_db with (force)"
    PRODUCT_SERVICE_LISTEN="$product_addr" RUST_LOG="${BENCH_SERVICE_LOG:-info}" "$bin/product-service" \
      >"$out/product-service-$backend.log" 2>&1 &
    pids+=("$!")
    watch+=(--watch "product-service=$!")
    # A cache TTL longer than the run: the ListCart scenario measures Checkout with a warm cache, not the
    # ProductService quota.
    CHECKOUT_LISTEN="$checkout_addr" CHECKOUT_DATABASE_URL="$pg/$checkout_db" CHECKOUT_LOMS_URL="http://$loms_addr" \
      CHECKOUT_PRODUCT_URL="http://$product_addr" CHECKOUT_PRODUCT_CACHE_TTL=1h RUST_LOG="${BENCH_SERVICE_LOG:-info}" \
      "$bin/checkout" >"$out/checkout-$backend.log" 2>&1 &
    pids+=("$!")
    watch+=(--watch "checkout=$!")
    "$bin/minizon-bench" wait "http://$checkout_addr" --timeout 60s
    checkout_args=(--checkout-url "http://$checkout_addr" --product-url "http://$product_addr")
  fi

  log "load ($backend, clients $clients, ${duration} per scenario)"
  scenarios_args=()
  if [ -n "${BENCH_SCENARIOS:-}" ]; then
    scenarios_args=(--scenarios "$BENCH_SCENARIOS")
  elif [ "$backend" = sqlite ]; then
    # The embedded backend is compared with PostgreSQL on the purchase path (target: within 2×); the PostgreSQL
    # run already has the pgbench baseline. Fewer scenarios keep the full run to a few minutes.
    scenarios_args=(--scenarios "${BENCH_SQLITE_SCENARIOS:-purchase-1,purchase-3,purchase-10,purchase-100,churn-3,health,stocks,sweep}")
  fi
  RUST_LOG="${BENCH_LOG:-info}" "$bin/minizon-bench" run \
    --label "LOMS on $backend, $profile build" \
    --loms-url "http://$loms_addr" \
    --loms-admin-token "$token" \
    --loms-database-url "$loms_url_db" \
    --loms-metrics-url "http://127.0.0.1:$((port_base + 4))/metrics" \
    "${pgbench_args[@]}" \
    "${checkout_args[@]}" \
    "${scenarios_args[@]}" \
    --clients "$clients" \
    --warmup "$warmup" \
    --duration "$duration" \
    --sweep-orders "$sweep_orders" \
    "${watch[@]}" \
    ${BENCH_ARGS:-} \
    --json "$out/report-$backend.json" \
    --markdown "$out/report-$backend.md" \
    | tee "$out/bench-$backend.log"
  stop_services
done

if [ -f "$out/report-postgres.json" ] && [ -f "$out/report-sqlite.json" ] && [[ "$backends" == *postgres*sqlite* ]]; then
  "$bin/minizon-bench" compare "$out/report-postgres.json" "$out/report-sqlite.json" >"$out/compare.md"
fi
cat "$out"/report-*.md "$out"/compare.md 2>/dev/null || true
log "reports in $out"
