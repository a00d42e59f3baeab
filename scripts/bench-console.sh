#!/bin/sh
# Console enrollment / peer-map benchmark on SQLite and PostgreSQL.
# Each backend runs in its own process so the peak RSS figures do not mix.
#   scripts/bench-console.sh [DEVICES] [POSTGRES_URL]
# Without POSTGRES_URL a temporary PostgreSQL server is started (needs initdb/postgres,
# Debian package `postgresql`), exactly as the test harness does (console/tests/support/pg.rs).
set -eu
cd "$(dirname "$0")/.."
devices="${1:-10000}"
pg_url="${2:-${ZMESH_BENCH_PG_URL:-}}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target}"
cargo build --release -q -p zmesh-console --example bench_enroll
bin="$CARGO_TARGET_DIR/release/examples/bench_enroll"
"$bin" --devices "$devices" --only sqlite
if [ -n "$pg_url" ]; then
    "$bin" --devices "$devices" --only postgres --database "$pg_url"
else
    "$bin" --devices "$devices" --only postgres
fi
