#!/usr/bin/env bash
# RUSTC_WRAPPER used by scripts/fuzz.sh: only zmesh's own crates, the parsers they build
# on and the fuzz targets get libFuzzer's coverage instrumentation; every other crate
# (cryptography above all, but also the async and TLS stacks the targets never run) is
# compiled without it. Instrumented constant-time curve arithmetic was most of a run's
# time and tells the fuzzer nothing (it cannot learn to forge a MAC from inside the
# cipher), and leaving the rest plain shortens the build.
# Cargo does not notice edits here: remove the fuzz target dir after changing the list.
set -euo pipefail
instrument=" zmesh_shared zmesh_agent boringtun serde_json ipnet base64 uuid hex "

rustc=$1
shift
name=
bin=false
prev=
for a in "$@"; do
    [[ $prev == --crate-name ]] && name=$a
    [[ $prev == --crate-type && $a == bin ]] && bin=true
    prev=$a
done
if [[ -z $name || $bin == true || $instrument == *" $name "* ]]; then
    exec "$rustc" "$@"
fi
args=()
for a in "$@"; do
    case $a in
    -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-*) ;;
    *) args+=("$a") ;;
    esac
done
exec "$rustc" "${args[@]}"
