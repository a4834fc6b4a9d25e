#!/usr/bin/env bash
# A standalone Kafka-compatible broker for development and the production-like topology: tansu
# (https://github.com/tansu-io/tansu), one Rust binary with its data in one SQLite file.
#
#   scripts/kafka.sh install   install tansu into $TANSU_ROOT if it is not there yet (CI runs this once)
#   scripts/kafka.sh start     install if needed, start the broker in the foreground, create the topics
#   scripts/kafka.sh topics    create the topics on a running broker
#
# Settings (environment): TANSU_ROOT (~/.cache/minizon/tansu), TANSU_BIN ($TANSU_ROOT/bin/tansu),
# KAFKA_LISTEN (127.0.0.1:9092), KAFKA_DATA_DIR (data/kafka), KAFKA_PARTITIONS (3),
# KAFKA_TOPICS (the order events and their dead-letter topic), TANSU_LOG (the broker's RUST_LOG, default warn: at
# info tansu logs every span of every request, gigabytes in minutes, and slows itself down until clients time out).
set -euo pipefail

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
TANSU_ROOT="${TANSU_ROOT:-$HOME/.cache/minizon/tansu}"
TANSU_BIN="${TANSU_BIN:-$TANSU_ROOT/bin/tansu}"
KAFKA_LISTEN="${KAFKA_LISTEN:-127.0.0.1:9092}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-data/kafka}"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-3}"
KAFKA_TOPICS="${KAFKA_TOPICS:-loms.order-status-changed loms.order-status-changed.dead-letter}"
TANSU_LOG="${TANSU_LOG:-warn}"

log() { echo "kafka.sh: $*" >&2; }

install() {
    if [[ -x "$TANSU_BIN" ]]; then
        return
    fi
    log "installing tansu $TANSU_VERSION into $TANSU_ROOT (a release build: about 10 minutes, once)"
    # libsql: the SQLite storage engine, so the broker needs no other service.
    cargo install tansu --version "$TANSU_VERSION" --locked --features libsql --root "$TANSU_ROOT"
    [[ -x "$TANSU_BIN" ]] || { log "tansu was installed but $TANSU_BIN is missing; set TANSU_BIN"; exit 1; }
}

reachable() {
    local host="${KAFKA_LISTEN%:*}" port="${KAFKA_LISTEN##*:}"
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

topics() {
    local topic output
    for topic in $KAFKA_TOPICS; do
        if output=$("$TANSU_BIN" topic create "$topic" --partitions "$KAFKA_PARTITIONS" \
            --broker "tcp://$KAFKA_LISTEN" 2>&1); then
            log "created topic $topic ($KAFKA_PARTITIONS partitions)"
        elif grep -qi "already exists" <<<"$output"; then
            log "topic $topic exists"
        else
            log "cannot create topic $topic: $output"
            return 1
        fi
    done
}

# tansu 0.6's SQLite schema has no index on its header table, and a fetch looks up each record's headers with a
# query of its own: every fetched record scans every header ever stored. Caught up, a consumer fetches a few
# records; after a backlog (a restart, a sink outage) one fetch of thousands of records took tens of seconds, and as
# tansu serves storage one request at a time, producers and heartbeats waited behind it until they timed out
# (docs/events.md, "A fetch that stalled the broker"). The index makes each lookup a search.
HEADER_INDEX_SQL="create index if not exists minizon_header_record on header (topition, offset_id)"

header_index() {
    local db="$1/tansu.db" created
    if command -v sqlite3 >/dev/null; then
        sqlite3 -cmd ".timeout 10000" "$db" "$HEADER_INDEX_SQL" && created=1
    elif command -v python3 >/dev/null; then
        python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=10); c.execute(sys.argv[2]); c.commit()' \
            "$db" "$HEADER_INDEX_SQL" && created=1
    else
        log "neither sqlite3 nor python3 is installed (apt-get install sqlite3)"
    fi
    # The broker runs either way: without the index it works until a consumer has a backlog to catch up on.
    if [[ -n "${created:-}" ]]; then
        log "header index in place"
    else
        log "WARNING: the broker's header index is missing: a consumer catching up on a backlog will stall the broker"
    fi
}

start() {
    install
    if reachable; then
        log "something already listens on $KAFKA_LISTEN; not starting another broker"
        exit 1
    fi
    mkdir -p "$KAFKA_DATA_DIR"
    local data
    data="$(cd "$KAFKA_DATA_DIR" && pwd)"
    log "broker on $KAFKA_LISTEN, data in $data/tansu.db (Ctrl-C stops it)"
    (cd "$data" && RUST_LOG="$TANSU_LOG" exec "$TANSU_BIN" broker \
        --listener-url "tcp://$KAFKA_LISTEN" \
        --advertised-listener-url "tcp://$KAFKA_LISTEN" \
        --storage-engine "sqlite://tansu.db") &
    local broker=$!
    trap 'kill -TERM "$broker" 2>/dev/null; wait "$broker"; exit 0' INT TERM
    for _ in $(seq 1 100); do
        reachable && break
        kill -0 "$broker" 2>/dev/null || { log "the broker exited"; wait "$broker"; exit 1; }
        sleep 0.1
    done
    reachable || { log "the broker did not come up on $KAFKA_LISTEN"; kill "$broker"; exit 1; }
    topics
    header_index "$data"
    log "ready: --kafka-brokers $KAFKA_LISTEN"
    wait "$broker"
}

case "${1:-start}" in
    install) install; log "tansu: $TANSU_BIN" ;;
    start) start ;;
    topics) topics ;;
    *) echo "usage: $0 [install|start|topics]" >&2; exit 2 ;;
esac
