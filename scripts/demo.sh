#!/usr/bin/env bash
# Quick-start demo (run as root): a console and three agents — alpha, bravo, charlie —
# each in its own network namespace on one machine, joined by a bridge like hosts on a
# LAN. Shows what a newcomer needs to see: the console's fingerprint, an enrollment key,
# the device list, every agent's status table, and the agents pinging each other over
# the encrypted mesh. Everything it creates (namespaces, processes, files) is removed on
# exit, also on failure or Ctrl-C; the whole run is bounded by ZMESH_DEMO_TIMEOUT (180 s).
#
#   sudo scripts/demo.sh                      # binaries from PATH or ./target
#   sudo ZMESH_BIN_DIR=target/release scripts/demo.sh
set -euo pipefail

limit=${ZMESH_DEMO_TIMEOUT:-180}
id="zmd$$"
declare -a pids=() namespaces=()
work=$(mktemp -d /tmp/zmesh-demo.XXXXXX)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n ${watchdog:-} ]]; then
        # The subshell first, silently (SIGKILL: it cannot report its sleep's death),
        # then its sleep, which would otherwise hold stderr open for the whole limit.
        local naps
        naps=$(pgrep -P "$watchdog" 2>/dev/null || true)
        kill -KILL "$watchdog" 2>/dev/null || true
        for p in $naps; do kill "$p" 2>/dev/null || true; done
    fi
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do
        # Anything still inside (a grandchild) would keep the namespace alive.
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    if ((rc != 0)); then
        echo "demo: FAILED (exit $rc); last lines of the logs:" >&2
        for f in "$work"/*.log; do [[ -f $f ]] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }; done
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A watchdog bounds the whole run: it sends us SIGTERM, and cleanup runs. Its stdout is
# not ours: a `sleep` left holding our stdout would keep a reader (`| tee`) waiting for
# the whole limit after we are done.
(sleep "$limit" && echo "demo: timed out after ${limit}s" >&2 && kill -TERM $$) >/dev/null &
watchdog=$!
disown "$watchdog" # no "Terminated" job notice when cleanup ends it

die() { echo "demo: $*" >&2; exit 1; }
if [[ -t 1 ]]; then
    say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
    say() { printf '\n== %s\n' "$*"; }
fi

[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces and TUN devices)"
command -v ip >/dev/null || die "iproute2 is needed"

find_bin() {
    local name=$1 here
    here=$(cd "$(dirname "$0")/.." && pwd)
    for d in "${ZMESH_BIN_DIR:-}" "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/release}" \
        "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/debug}" "$here/target/release" "$here/target/debug"; do
        [[ -n $d && -x $d/$name ]] && { echo "$d/$name"; return; }
    done
    command -v "$name" || die "$name not found: build it (cargo build --release -p zmesh-agent -p zmesh-console) or set ZMESH_BIN_DIR"
}
ZMESH=$(find_bin zmesh)
CONSOLE=$(find_bin zmesh-console)
echo "demo: using $ZMESH and $CONSOLE"

# Bounded polling: wait_until SECONDS DESCRIPTION COMMAND...
wait_until() {
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
        sleep 0.2
    done
}

# --- the network: a bridge namespace and one namespace per host -----------------------
br="$id-br"
ip netns add "$br"; namespaces+=("$br")
ip -n "$br" link set lo up
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 up
n=0
add_host() { # add_host NAME IP
    local ns="$id-$1"
    ip netns add "$ns"; namespaces+=("$ns")
    ip -n "$br" link add "v$n" type veth peer name eth0 netns "$ns"
    ip -n "$br" link set "v$n" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$2/24" dev eth0
    ip -n "$ns" link set eth0 up
    n=$((n + 1))
}
add_host console 10.99.0.1
add_host alpha 10.99.0.11
add_host bravo 10.99.0.12
add_host charlie 10.99.0.13
agents=(alpha bravo charlie)
in_ns() { local ns="$id-$1"; shift; ip netns exec "$ns" "$@"; }

# --- the console -----------------------------------------------------------------------
say "1. Start the console (zmesh-console serve) on 10.99.0.1"
data="$work/console"
in_ns console "$CONSOLE" serve --data-dir "$data" --listen 10.99.0.1:8443 >"$work/console.log" 2>&1 &
pids+=($!)
wait_until 30 "the console to listen" in_ns alpha bash -c 'exec 3<>/dev/tcp/10.99.0.1/8443'
grep -E '^(TLS certificate|peer-map signing key|listening|created admin)' "$work/console.log" || true
console_cli() { in_ns console "$CONSOLE" --data-dir "$data" "$@"; }

# --- the agents ------------------------------------------------------------------------
say "2. Start an agent daemon (zmesh daemon) in each of alpha, bravo, charlie"
for a in "${agents[@]}"; do
    mkdir -p "$work/$a"
    in_ns "$a" "$ZMESH" daemon --state-dir "$work/$a" --port 51820 --host-dns off >"$work/$a.log" 2>&1 &
    pids+=($!)
done
for a in "${agents[@]}"; do
    wait_until 20 "the $a daemon" in_ns "$a" "$ZMESH" --state-dir "$work/$a" status
done
echo "three daemons up, not enrolled yet"

say "3. Create an enrollment key (zmesh-console keys create --reusable --ttl 1h)"
key=$(console_cli keys create --reusable --ttl 1h --description demo 2>/dev/null)
[[ $key == zmek1.* ]] || die "no enrollment key from keys create: $key"
echo "key: ${key:0:14}…${key: -16} (the part after the last dot is the console's certificate fingerprint)"

say "4. Enroll each agent (zmesh up --console https://10.99.0.1:8443 --enroll-key zmek1.…)"
for a in "${agents[@]}"; do
    in_ns "$a" "$ZMESH" --state-dir "$work/$a" up --console https://10.99.0.1:8443 \
        --enroll-key "$key" --name "$a"
done

say "5. The console's device list (zmesh-console devices list)"
console_cli devices list

has_two_peers() {
    [[ $(in_ns "$1" "$ZMESH" --state-dir "$work/$1" status --json | grep -c '"public_key"') -eq 3 ]]
}
for a in "${agents[@]}"; do wait_until 30 "$a to learn its two peers" has_two_peers "$a"; done

say "6. Ping each other through the mesh (zmesh ping PEER)"
pairs=0
for a in "${agents[@]}"; do
    for b in "${agents[@]}"; do
        [[ $a == "$b" ]] && continue
        echo "-- $a -> $b"
        # The first probe may also carry the handshake; allow a few tries.
        ok=no
        for _ in 1 2 3; do
            if in_ns "$a" "$ZMESH" --state-dir "$work/$a" ping "$b" -c 2 --timeout 2s; then
                ok=yes; break
            fi
        done
        [[ $ok == yes ]] || die "$a cannot ping $b"
        pairs=$((pairs + 1))
    done
done

say "7. Each agent's view (zmesh status)"
for a in "${agents[@]}"; do
    echo "-- $a"
    in_ns "$a" "$ZMESH" --state-dir "$work/$a" status
done

say "8. Ordinary programs use the mesh too: kernel ping to each overlay address"
for a in "${agents[@]}"; do
    for b in "${agents[@]}"; do
        [[ $a == "$b" ]] && continue
        ip4=$(in_ns "$b" "$ZMESH" --state-dir "$work/$b" status --json \
            | grep -oE '"100\.[0-9]+\.[0-9]+\.[0-9]+"' | head -1 | tr -d '"')
        in_ns "$a" ping -n -q -c 1 -W 2 "$ip4" >/dev/null || die "kernel ping $a -> $b ($ip4) failed"
        echo "$a -> $b ($ip4): ok"
    done
done

echo
echo "demo: OK: alpha, bravo and charlie ping each other ($pairs of 6 pairs, both zmesh ping and ping)"
