#!/bin/sh
# Runs the three loads of issue 6 against a local server and saves, for each, the JSON report
# (load-NAME.json) and the human-readable one of the same run (load-NAME.txt).
#
#   AGENTRACK=target/release/agentrack COMMIT=$(git rev-parse --short HEAD) bench-results/load-run.sh [NAME...]
#
# NAME is light, heavy, heavy-golden, fanout or fanout-heartbeat (default: all five).
# With PG_ADMIN_URL=postgres://USER@HOST:PORT/postgres the local server runs on a fresh PostgreSQL
# database made for each run (and the reports are saved as load-pg-NAME.*).
set -eu
out=$(cd "$(dirname "$0")" && pwd)
bin=${AGENTRACK:-${CARGO_TARGET_DIR:-target}/release/agentrack}
commit=${COMMIT:-$(git -C "$out" rev-parse --short HEAD)}

run() {
    name=$1
    shift
    if [ -n "${PG_ADMIN_URL:-}" ]; then
        db="agentrack_load_$(date +%s)"
        psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $db"
        set -- "$@" --store "${PG_ADMIN_URL%/*}/$db"
        name="pg-$name"
    fi
    text=$(mktemp)
    before=$(cut -d' ' -f1-3 /proc/loadavg)
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    "$bin" load "$@" --baseline --json --text-report "$text" > "$out/load-$name.json"
    {
        echo "agentrack load: $name"
        echo "command: agentrack load $* --baseline --json"
        echo "binary built from commit $commit (release); run at $started"
        echo "machine: $(nproc) cores shared with other builds; load average before the run: $before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        cat "$text"
    } > "$out/load-$name.txt"
    rm -f "$text"
    cat "$out/load-$name.txt"
}

for name in ${@:-light heavy heavy-golden fanout fanout-heartbeat}; do
    case $name in
        light) run light --agents 10 --heartbeat 100ms --subscribers 10 --duration 20s ;;
        heavy) run heavy --scenario heartbeat --agents 200 --heartbeat 0 --subscribers 50 --duration 30s ;;
        fanout) run fanout --agents 200 --heartbeat 20ms --heartbeats-per-phase 2 --subscribers 10000 --duration 30s ;;
        # The golden path under heavy load: 200 agents, a heartbeat every 10 ms.
        heavy-golden) run heavy-golden --agents 200 --heartbeat 10ms --subscribers 50 --duration 30s ;;
        # The fan-out path alone: heartbeat events are published without waiting for a commit,
        # 100 agents x one every 20 ms = 5,000 events/s when the server keeps up.
        fanout-heartbeat) run fanout-heartbeat --scenario heartbeat --agents 100 --heartbeat 20ms --subscribers 10000 --duration 30s ;;
        *) echo "unknown load $name (light, heavy, heavy-golden, fanout, fanout-heartbeat)" >&2; exit 2 ;;
    esac
done
