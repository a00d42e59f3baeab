#!/usr/bin/env bash
# Load harness: N simulated agents (real enrollment, real TLS WebSocket streams, the
# agent's own map/delta code) against real `zmesh-console serve` processes; see
# docs/performance.md ("Agents at scale").
#   scripts/bench-scale.sh --agents N [--backend sqlite|postgres] [--replicas 2 --kill-one]
#                          [--stuck K] [--hubs H] [--rounds R] [--verify-sample S]
# --backend postgres starts a temporary PostgreSQL (Debian package `postgresql`) like the
# tests do; --replicas 2 also needs haproxy (Debian package `haproxy`). Everything listens
# on 127.0.0.1 and is removed at the end. The last line is the summary:
#   scale: agents=N backend=B p99_apply_ms=X max_apply_ms=Y rss_per_stream_kb=Z reconnect_s=W stale=K
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
# two replicas only make sense on PostgreSQL
for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ ${args[i]} == --replicas && ${args[i + 1]:-1} != 1 ]] && [[ " ${args[*]} " != *" --backend "* ]]; then
        args+=(--backend postgres)
    fi
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p zmesh-console --bin zmesh-console
cargo build --release -q -p zmesh-agent --example bench_scale
# 10,000 streams: the simulator and the console each hold one socket per stream
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$CARGO_TARGET_DIR/release/examples/bench_scale" \
    --console-bin "$CARGO_TARGET_DIR/release/zmesh-console" "${args[@]}"
