#!/bin/bash
# What one group commit of the PostgreSQL store costs, statement by statement: a batch of
# 167 events (the store bench's batch at 256 clients; the bench's real event and record JSON),
# alone and with each other statement the writer sends in the same transaction. pgbench, one
# client, 300 transactions per variant, rounds alternating.
#   PG_URL=postgres://USER@HOST:PORT bench-results/pg-commit-breakdown/run.sh
set -eu
cd "$(dirname "$0")"
url=${PG_URL:-postgres://postgres@127.0.0.1:5432}
psql -q $url/postgres -c "DROP DATABASE IF EXISTS pgx" -c "CREATE DATABASE pgx" 2>/dev/null
psql -q $url/pgx -f schema.sql 2>/dev/null
psql -q $url/pgx -c "INSERT INTO executions SELECT 'exec_' || g, 'acme', 'u', 't', 'a', 'running', 0, NULL, (SELECT big FROM blob), 0, 0, 0 FROM generate_series(0, 29999) g"
tmp=$(mktemp)
for round in 1 2 3 4; do
  for v in "raw:raw.sql" "events:events.sql" "events+fence_update:events.sql fence_update.sql" "events+notify:events.sql notify.sql" "events+rows2287:events.sql rows_big.sql" "events+rows750:events.sql rows_small.sql" "all (as the writer):events.sql rows_big.sql fence_update.sql notify.sql"; do
    name=${v%%:*}; files=${v#*:}
    { grep -h "^\\\\set" $files || true; echo "BEGIN;"; grep -hv "^\\\\set" $files; echo "COMMIT;"; } > "$tmp"
    lat=$(pgbench -n -c 1 -t 300 -M prepared -f "$tmp" $url/pgx 2>/dev/null | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    echo "round $round $name: $lat ms"
  done
done
psql -q $url/postgres -c "DROP DATABASE pgx WITH (FORCE)"
