#!/usr/bin/env bash
# bench-throughput.sh - TCP throughput (iperf3) between two network namespaces, in one run:
#   veth    plain veth pair, no tunnel
#   wggo    wireguard-go on both sides (wg setconf)
#   zmesh   two zmesh data planes (agent/examples/dataplane.rs, --release), static config
#   agent   the whole product: a console (zmesh-console serve) and two agents
#           (zmesh daemon + zmesh up), tunnels set up by the console, policy filter on
# and prints Gbit/s side by side with our ratios to wireguard-go.
#
# usage (root): scripts/bench-throughput.sh [--time S] [--streams "1 4"] [--paths "veth wggo zmesh agent"]
# env: DATAPLANE_BIN=path, ZMESH_BIN_DIR=dir with zmesh and zmesh-console (else built with
#      cargo --release into $CARGO_TARGET_DIR, default ./target)
# Creates namespaces zmb<pid>-a / zmb<pid>-b and deletes them (and every process it started,
# by PID) on exit. Each daemon is bounded by `timeout`.
set -euo pipefail

DUR=10 STREAMS="1 4" PATHS="veth wggo zmesh agent"
while [[ $# -gt 0 ]]; do
    case $1 in
        --time) DUR=$2; shift 2 ;;
        --streams) STREAMS=$2; shift 2 ;;
        --paths) PATHS=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $(id -u) == 0 ]] || { echo "needs root (namespaces, TUN)" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
ID=$$
NA=zmb$ID-a NB=zmb$ID-b
VA=zmb${ID}a VB=zmb${ID}b              # veth ends
IPA=10.77.0.1 IPB=10.77.0.2
MAX_LIFE=$((DUR * 6 + 120))           # upper bound for every daemon
WORK=$(mktemp -d)
PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$NA" 2>/dev/null || true
    ip netns del "$NB" 2>/dev/null || true
    rm -f "/var/run/wireguard/wg${ID}a.sock" "/var/run/wireguard/wg${ID}b.sock"
    rm -rf "$WORK"
}
trap cleanup EXIT

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wireguard-go >/dev/null || need+=(wireguard-go)
command -v wg >/dev/null || need+=(wireguard-tools)
if [[ ${#need[@]} -gt 0 ]]; then
    log "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

BIN=${DATAPLANE_BIN:-}
if [[ -z $BIN && " $PATHS " == *" zmesh "* ]]; then
    log "building the dataplane example (release)"
    (cd "$REPO" && cargo build -q --release -p zmesh-agent --example dataplane)
    BIN=$CARGO_TARGET_DIR/release/examples/dataplane
fi
BINDIR=${ZMESH_BIN_DIR:-}
if [[ -z $BINDIR && " $PATHS " == *" agent "* ]]; then
    log "building zmesh and zmesh-console (release)"
    (cd "$REPO" && cargo build -q --release -p zmesh-agent -p zmesh-console)
    BINDIR=$CARGO_TARGET_DIR/release
fi

# --- namespaces and veth ---------------------------------------------------------------
ip netns add "$NA"
ip netns add "$NB"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NA"
ip link set "$VB" netns "$NB"
ip -n "$NA" addr add $IPA/24 dev "$VA"
ip -n "$NB" addr add $IPB/24 dev "$VB"
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; done
ip -n "$NA" link set "$VA" up
ip -n "$NB" link set "$VB" up

for s in a b; do
    (umask 077; wg genkey >"$WORK/$s.key")
    wg pubkey <"$WORK/$s.key" >"$WORK/$s.pub"
done

# start_bg NS LOGFILE CMD... : run CMD in NS under timeout; remember the PID
start_bg() {
    local ns=$1 logf=$2; shift 2
    ip netns exec "$ns" timeout "$MAX_LIFE" "$@" >"$logf" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
}

stop_pids() {   # PID... : TERM, wait (bounded), KILL
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

wait_ping() {   # DST : one ping through within 20 s
    for _ in $(seq 1 20); do
        ip netns exec "$NA" ping -c 1 -W 1 -q "$1" >/dev/null 2>&1 && return 0
    done
    return 1
}

declare -A RESULT
run_iperf() {   # PATH DST STREAMS
    local path=$1 dst=$2 n=$3 json=$WORK/$1-P$3.json spid gbps
    start_bg "$NB" "$WORK/iperf-s-$path-$n.log" iperf3 -s -1 -B "$dst" -p 5201
    spid=$LAST_PID
    for _ in $(seq 1 50); do
        ip netns exec "$NB" ss -ltnH 'sport = :5201' | grep -q . && break
        sleep 0.1
    done
    ip netns exec "$NA" timeout $((DUR + 30)) iperf3 -c "$dst" -p 5201 -t "$DUR" -P "$n" -J >"$json" || true
    stop_pids "$spid"
    gbps=$(python3 -c '
import json, sys
try:
    print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception:
    print("nan")' "$json")
    RESULT[$path-$n]=$gbps
    log "$path P$n: $gbps Gbit/s"
}

for path in $PATHS; do
    case $path in
        veth)
            for n in $STREAMS; do run_iperf veth $IPB "$n"; done
            ;;
        wggo)
            mkdir -p /var/run/wireguard
            for s in a b; do
                ns=$NA; [[ $s == b ]] && ns=$NB
                start_bg "$ns" "$WORK/wggo-$s.log" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
                    LOG_LEVEL=error wireguard-go -f "wg$ID$s"
                declare "WGPID_$s=$LAST_PID"
            done
            for s in a b; do
                for _ in $(seq 1 100); do [[ -S /var/run/wireguard/wg$ID$s.sock ]] && break; sleep 0.1; done
            done
            for s in a b; do
                if [[ $s == a ]]; then ns=$NA o=b ep=$IPB me=1 peer=2; else ns=$NB o=a ep=$IPA me=2 peer=1; fi
                printf '[Interface]\nPrivateKey = %s\nListenPort = 51820\n[Peer]\nPublicKey = %s\nEndpoint = %s:51820\nAllowedIPs = 100.65.0.%s/32\n' \
                    "$(cat "$WORK/$s.key")" "$(cat "$WORK/$o.pub")" "$ep" "$peer" >"$WORK/wg-$s.conf"
                ip netns exec "$ns" wg setconf "wg$ID$s" "$WORK/wg-$s.conf"
                ip -n "$ns" addr add "100.65.0.$me/24" dev "wg$ID$s"
                ip -n "$ns" link set "wg$ID$s" mtu 1420 up
            done
            if wait_ping 100.65.0.2; then
                for n in $STREAMS; do run_iperf wggo 100.65.0.2 "$n"; done
            else
                log "wireguard-go tunnel did not come up"; cat "$WORK"/wggo-*.log >&2 || true
            fi
            # shellcheck disable=SC2154
            stop_pids "$WGPID_a" "$WGPID_b"
            ;;
        zmesh)
            for s in a b; do
                if [[ $s == a ]]; then ns=$NA o=b ep=$IPB me=1 peer=2; else ns=$NB o=a ep=$IPA me=2 peer=1; fi
                start_bg "$ns" "$WORK/zmesh-$s.log" env RUST_LOG="${RUST_LOG:-info}" "$BIN" \
                    --key-file "$WORK/$s.key" --tun "zmt$ID$s" --v4 "100.66.0.$me" --v6 "fd7a:66::$me" \
                    --net4 100.66.0.0/24 --net6 fd7a:66::/64 --port 51820 \
                    --peer "$(cat "$WORK/$o.pub"),$ep:51820,100.66.0.$peer/32,fd7a:66::$peer/128" \
                    --max-seconds "$MAX_LIFE"
                declare "ZPID_$s=$LAST_PID"
            done
            for s in a b; do
                ns=$NA; [[ $s == b ]] && ns=$NB
                for _ in $(seq 1 100); do ip -n "$ns" link show "zmt$ID$s" >/dev/null 2>&1 && break; sleep 0.1; done
            done
            if wait_ping 100.66.0.2; then
                for n in $STREAMS; do run_iperf zmesh 100.66.0.2 "$n"; done
            else
                log "zmesh tunnel did not come up"; cat "$WORK"/zmesh-*.log >&2 || true
            fi
            # shellcheck disable=SC2154
            stop_pids "$ZPID_a" "$ZPID_b"
            grep -h counters "$WORK"/zmesh-*.log >&2 || true
            ;;
        agent)
            # console in a's namespace (b reaches it over the veth); one daemon per side
            start_bg "$NA" "$WORK/console.log" "$BINDIR/zmesh-console" serve \
                --data-dir "$WORK/console" --listen "$IPA:8443" --no-stun
            CPID=$LAST_PID
            for _ in $(seq 1 100); do
                ip netns exec "$NB" bash -c "exec 3<>/dev/tcp/$IPA/8443" 2>/dev/null && break
                sleep 0.2
            done
            key=$(ip netns exec "$NA" "$BINDIR/zmesh-console" --data-dir "$WORK/console" \
                keys create --reusable --ttl 1h --description bench 2>/dev/null)
            for s in a b; do
                ns=$NA; [[ $s == b ]] && ns=$NB
                mkdir -p "$WORK/agent-$s"
                start_bg "$ns" "$WORK/agent-$s.log" env RUST_LOG="${RUST_LOG:-info}" \
                    "$BINDIR/zmesh" daemon --state-dir "$WORK/agent-$s" --tun "zma$ID$s" --port 51820 --host-dns off
                declare "APID_$s=$LAST_PID"
                for _ in $(seq 1 100); do
                    ip netns exec "$ns" "$BINDIR/zmesh" --state-dir "$WORK/agent-$s" status >/dev/null 2>&1 && break
                    sleep 0.1
                done
                ip netns exec "$ns" "$BINDIR/zmesh" --state-dir "$WORK/agent-$s" up \
                    --console "https://$IPA:8443" --enroll-key "$key" --name "bench-$s" >&2
            done
            dst=""
            for _ in $(seq 1 100); do
                dst=$(ip netns exec "$NB" "$BINDIR/zmesh" --state-dir "$WORK/agent-b" status --json 2>/dev/null \
                    | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin)["self"]["overlay_ips"] if "." in i][0])' 2>/dev/null) && break
                sleep 0.1
            done
            if [[ -n $dst ]] && wait_ping "$dst"; then
                for n in $STREAMS; do run_iperf agent "$dst" "$n"; done
                ip netns exec "$NA" "$BINDIR/zmesh" --state-dir "$WORK/agent-a" status >&2 || true
            else
                log "the agents' tunnel did not come up"; tail -n 20 "$WORK"/agent-*.log "$WORK/console.log" >&2 || true
            fi
            # shellcheck disable=SC2154
            stop_pids "$APID_a" "$APID_b" "$CPID"
            ;;
        *) log "unknown path $path"; exit 2 ;;
    esac
done

echo
echo "nproc=$(nproc) kernel=$(uname -r) time=${DUR}s wireguard-go=$(wireguard-go --version 2>/dev/null | head -n1 | awk '{print $2}')"
ratio() { python3 -c 'import sys,math; g,z=float(sys.argv[1]),float(sys.argv[2]); print("nan" if math.isnan(g) or math.isnan(z) or g==0 else "%.2fx" % (z/g))' "$1" "$2"; }
printf '%-8s %10s %10s %10s %10s %12s %12s\n' streams veth wggo zmesh agent zmesh/wggo agent/wggo
for n in $STREAMS; do
    v=${RESULT[veth-$n]:-nan} g=${RESULT[wggo-$n]:-nan} z=${RESULT[zmesh-$n]:-nan} a=${RESULT[agent-$n]:-nan}
    printf '%-8s %10s %10s %10s %10s %12s %12s\n' "P$n" "$v" "$g" "$z" "$a" "$(ratio "$g" "$z")" "$(ratio "$g" "$a")"
done
echo "(Gbit/s, iperf3 TCP a -> b, received)"
