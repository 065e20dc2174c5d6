#!/bin/sh
# The cluster loads of issue 13: the same `agentrack load` against one node and against three
# nodes on one PostgreSQL, back to back, each cluster on a fresh database. Saves, per run, the
# JSON and text reports (cluster-N-SCENARIO.json / .txt) and each node's CPU seconds over the
# whole run (cluster-N-SCENARIO.cpu: utime+stime from /proc, the load's setup and baseline
# included; the report's "servers (--server-pid)" line is the nodes' CPU during the window alone).
#
#   PG_ADMIN_URL=postgres://USER@HOST:PORT/postgres AGENTRACK=target/release/agentrack \
#     bench-results/cluster-load.sh [NODES...]        (default: 1 3)
#
# With three nodes the agents are spread over them (agent i on node i mod 3) and every odd
# agent of the heartbeat scenario heartbeats through the next node, which forwards to the owner:
# the report's "(forwarded)" row against the plain heartbeat row is the cost of a hop.
set -eu
out=$(cd "$(dirname "$0")" && pwd)
bin=${AGENTRACK:-${CARGO_TARGET_DIR:-target}/release/agentrack}
admin_url=${PG_ADMIN_URL:?PG_ADMIN_URL names a PostgreSQL server to make throwaway databases on}
commit=${COMMIT:-$(git -C "$out" rev-parse --short HEAD)}
work=$(mktemp -d /tmp/agentrack-cluster-load.XXXXXX)
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cpu_seconds() { # utime + stime of a process, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

postgres_cpu() { # "PID SECONDS" for every running postgres process
    for pid in $(pgrep -x postgres); do
        echo "$pid $(cpu_seconds "$pid" 2>/dev/null || echo 0)"
    done
}

store_counter() { # store_counter NAME TOKEN URL... → the sum of a /metrics counter over the nodes
    name=$1 token=$2
    shift 2
    for url in "$@"; do
        curl -s -H "Authorization: Bearer $token" "$url/metrics"
    done | awk -v name="$name" '$1 ~ "^"name"({|$)" { sum += $2 } END { printf "%d", sum }'
}

start_node() { # start_node STORE DIR → prints the node's URL
    mkdir -p "$2"
    AGENTRACK_LOG=warn "$bin" serve --store "$1" --data "$2" --listen 127.0.0.1:0 \
        > "$2/stdout" 2> "$2/stderr" &
    echo $! > "$2/pid"
    for _ in $(seq 1 600); do
        url=$(sed -n 's/^listening on //p' "$2/stdout")
        if [ -n "$url" ]; then echo "$url"; return; fi
        sleep 0.1
    done
    echo "node in $2 did not start" >&2
    exit 1
}

balanced() { # balanced URL TOKEN NODES: every shard owned, shares within one of each other
    AGENTRACK_URL=$1 AGENTRACK_TOKEN=$2 "$bin" cluster status --json | python3 -c '
import json, sys
status = json.load(sys.stdin)
shares = [len(node["shards"]) for node in status["nodes"]]
ok = not status["unowned_shards"] and len(shares) == int(sys.argv[1]) and max(shares) - min(shares) <= 1
sys.exit(0 if ok else 1)' "$3"
}

run() { # run NODES SCENARIO LOAD-ARGS...
    nodes=$1 scenario=$2
    shift 2
    db="agentrack_cluster_$(date +%s)_$nodes"
    psql -q "$admin_url" -c "CREATE DATABASE $db"
    store="${admin_url%/*}/$db"
    urls=""
    pids=""
    for n in $(seq 1 "$nodes"); do
        url=$(start_node "$store" "$work/$db/node$n")
        pids="$pids $(cat "$work/$db/node$n/pid")"
        urls="${urls:+$urls,}$url"
    done
    token=$(cat "$work/$db/node1/admin.token")
    until balanced "${urls%%,*}" "$token" "$nodes"; do sleep 0.2; done
    before=""
    for pid in $pids; do before="$before $(cpu_seconds "$pid")"; done
    postgres_cpu > "$work/pg-before"
    node_urls=$(echo "$urls" | tr ',' ' ')
    batches_before=$(store_counter agentrack_store_batches_total "$token" $node_urls)
    events_before=$(store_counter agentrack_store_events_written_total "$token" $node_urls)
    name="cluster-$nodes-$scenario"
    text=$(mktemp)
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    server_pids=""
    for pid in $pids; do server_pids="$server_pids --server-pid $pid"; done
    # shellcheck disable=SC2086
    "$bin" load --url "$urls" --token "$token" --scenario "$scenario" "$@" --baseline --json \
        $server_pids --text-report "$text" > "$out/$name.json"
    {
        echo "agentrack load: $name ($nodes node(s) on one PostgreSQL, fresh database)"
        echo "command: agentrack load --url URL1[,URL2,URL3] --scenario $scenario $* --baseline --json"
        echo "commit: $commit; started $started; load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        cat "$text"
    } > "$out/$name.txt"
    rm -f "$text"
    batches=$(( $(store_counter agentrack_store_batches_total "$token" $node_urls) - batches_before ))
    events=$(( $(store_counter agentrack_store_events_written_total "$token" $node_urls) - events_before ))
    postgres_cpu > "$work/pg-after"
    {
        echo "# CPU seconds over the run (utime+stime, /proc/PID/stat), the load's setup and teardown included"
        set -- $before
        for pid in $pids; do
            echo "node pid $pid: $(awk -v a="$(cpu_seconds "$pid")" -v b="$1" 'BEGIN { printf "%.2f", a - b }') s"
            shift
        done
        awk 'NR == FNR { before[$1] = $2; next } { sum += $2 - before[$1] } END { printf "postgres (all its processes): %.2f s\n", sum }' \
            "$work/pg-before" "$work/pg-after"
        echo "store batches committed (all nodes): $batches"
        echo "events written (all nodes): $events"
    } > "$out/$name.cpu"
    for pid in $pids; do kill "$pid"; done
    wait 2>/dev/null || true
    pids=""
    psql -q "$admin_url" -c "DROP DATABASE $db WITH (FORCE)"
}

[ $# -gt 0 ] || set -- 1 3
for nodes in "$@"; do
    run "$nodes" heartbeat --agents 200 --heartbeat 0 --subscribers 50 --duration 30s
    run "$nodes" golden --agents 200 --heartbeat 10ms --subscribers 50 --duration 30s
done
