#!/usr/bin/env bash
# Where CreateOrder's time goes on PostgreSQL: runs one scenario (create-3 by default) against a fresh LOMS, and
# meanwhile samples what the LOMS database sessions wait on (pg_stat_activity, every 20 ms) and how much CPU LOMS,
# PostgreSQL and the load generator each use (/proc). On a schema that still has the outbox NOTIFY trigger (before
# migration 0003), runs it again with the trigger disabled on this scratch database only, to measure what that
# trigger costs. Needs the release binaries (`make bench` builds them) and PostgreSQL on 127.0.0.1:5432.
#
#   scripts/bench-profile.sh [clients] [scenario]     # defaults: 32 create-3
set -euo pipefail
cd "$(dirname "$0")/.."

clients="${1:-32}"
scenario="${2:-create-3}"
seconds="${BENCH_PROFILE_SECONDS:-12}"
pg="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
db="minizon_bench_profile"
bin="${CARGO_TARGET_DIR:-target}/release"
out="target/bench/profile"
addr="127.0.0.1:26071"
mkdir -p "$out"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

psql "$pg/postgres" -qAt -c "drop database if exists $db with (force)" >/dev/null
LOMS_LISTEN="$addr" LOMS_DATABASE_URL="$pg/$db" LOMS_ADMIN_TOKEN=profile LOMS_OUTBOX_RELAY=false RUST_LOG=warn \
  "$bin/loms" serve >"$out/loms.log" 2>&1 &
loms_pid=$!
pids+=("$loms_pid")
"$bin/minizon-bench" wait "http://$addr" --timeout 60s

# utime + stime, in clock ticks, of the processes whose command name is $1 (or of pid $2).
cpu_ticks() {
  local total=0 f
  if [ -n "${2:-}" ]; then
    awk '{print $14 + $15}' "/proc/$2/stat" 2>/dev/null || echo 0
    return
  fi
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    case "$line" in *"($1)"*) total=$((total + $(echo "$line" | awk '{print $14 + $15}'))) ;; esac
  done
  echo "$total"
}

profile() {
  local label="$1" seed_flag="$2"
  # The load generator warms up for 2 s, then measures for $seconds; sampling covers the measured window.
  # With the database URL the load generator runs VACUUM (ANALYZE) before the scenario, as `make bench` does.
  RUST_LOG=warn "$bin/minizon-bench" run --loms-url "http://$addr" --loms-admin-token profile $seed_flag \
    --loms-database-url "$pg/$db" \
    --scenarios "$scenario" --clients "$clients" --warmup 2s --duration "${seconds}s" \
    --json "$out/$label.json" --markdown "$out/$label.md" >/dev/null &
  local bench_pid=$!
  sleep 4
  local hz; hz=$(getconf CLK_TCK)
  local pg0 loms0 bench0 t0; pg0=$(cpu_ticks postgres); loms0=$(cpu_ticks x "$loms_pid"); bench0=$(cpu_ticks x "$bench_pid"); t0=$(date +%s.%N)
  : >"$out/$label-waits.txt"
  local end=$((SECONDS + seconds - 6))
  while [ $SECONDS -lt $end ]; do
    psql "$pg/$db" -qAt -F ' ' -c "select coalesce(wait_event_type, 'CPU'), coalesce(wait_event, 'running')
      from pg_stat_activity where datname = '$db' and state in ('active', 'idle in transaction') and pid <> pg_backend_pid()" \
      >>"$out/$label-waits.txt"
    sleep 0.02
  done
  # Which heavyweight "object" locks the sessions hold or wait for, once, mid-run (the NOTIFY queue lock is
  # AccessExclusiveLock on object 0 of pg_database).
  psql "$pg/$db" -qAt -F ' ' -c "select 'pg_locks:', locktype, classid::regclass, objid, mode, granted, count(*)
    from pg_locks where locktype = 'object' group by 2, 3, 4, 5, 6 order by 7 desc" >"$out/$label-locks.txt"
  local pg1 loms1 bench1 t1; pg1=$(cpu_ticks postgres); loms1=$(cpu_ticks x "$loms_pid"); bench1=$(cpu_ticks x "$bench_pid"); t1=$(date +%s.%N)
  wait "$bench_pid"
  echo "### $label"
  grep -h "| $scenario |" "$out/$label.md" || true
  awk -v hz="$hz" -v s="$(echo "$t1 - $t0" | bc)" -v pg=$((pg1 - pg0)) -v loms=$((loms1 - loms0)) -v bench=$((bench1 - bench0)) \
    'BEGIN { printf "CPU cores busy: postgres %.2f, loms %.2f, minizon-bench %.2f (of 2)\n", pg/hz/s, loms/hz/s, bench/hz/s }'
  # LOMS's CPU per successful call of the scenario's first operation (the rate is the load generator's, over its
  # whole measured window; the ticks are the sampled window's).
  local rate; rate=$(grep -h "| $scenario |" "$out/$label.md" | head -n 1 | awk -F'|' '{ gsub(/ /, "", $4); print $4 }')
  awk -v hz="$hz" -v s="$(echo "$t1 - $t0" | bc)" -v loms=$((loms1 - loms0)) -v rate="${rate:-0}" \
    'BEGIN { if (rate > 0) printf "LOMS CPU per call: %.1f µs\n", 1e6 * loms / hz / s / rate }'
  cat "$out/$label-locks.txt"
  echo "LOMS database sessions by wait event (share of samples of active / idle-in-transaction sessions):"
  sort "$out/$label-waits.txt" | uniq -c | sort -rn | awk '{ n[NR] = $0; total += $1 } END { for (i = 1; i <= NR && i <= 8; i++) { split(n[i], f, " "); printf "  %5.1f %%  %s %s\n", 100 * f[1] / total, f[2], f[3] } }'
  echo
}

profile as-built ""
# Migration 0003 dropped the trigger; the comparison only applies to a schema that still has it.
if [ "$(psql "$pg/$db" -qAt -c "select count(*) from pg_trigger where tgname = 'outbox_notify'")" != 0 ]; then
  psql "$pg/$db" -qAt -c "alter table outbox disable trigger outbox_notify" >/dev/null
  profile without-notify-trigger --no-seed
fi
