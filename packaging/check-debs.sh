#!/usr/bin/env bash
# Builds the two Debian packages and checks them: contents, control data, maintainer
# scripts, the units under `systemd-analyze verify` and `security` in a throwaway root
# made with `dpkg -x`. With CI set (or ZMESH_TEST_INSTALL=1) it also installs the agent
# on this machine through packaging/install.sh, upgrades, removes and purges it, and
# does the same for the console, checking that state survives all but purge.
#
# Binaries come from the dev profile by default, so CI reuses what `cargo test` built;
# ZMESH_DEB_PROFILE=release makes release packages. Output: $CARGO_TARGET_DIR/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$(pwd)
target=${CARGO_TARGET_DIR:-$root_dir/target}
profile=${ZMESH_DEB_PROFILE:-dev}
out="$target/debian"
work=$(mktemp -d /tmp/zmesh-debcheck.XXXXXX)
trap 'rm -rf "$work"' EXIT

fail() { echo "check-debs: FAIL: $*" >&2; exit 1; }
step() { echo "check-debs: $*"; }

command -v cargo-deb >/dev/null || fail "cargo-deb is not installed (cargo install cargo-deb --locked)"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (apt-get install systemd)"

step "building binaries ($profile profile; a no-op when fresh)"
cargo build --locked --profile "$profile" -p zmesh-agent -p zmesh-console --bins 2>&1 | tail -1
rm -f "$out"/zmesh_*.deb "$out"/zmesh-console_*.deb
for p in zmesh-agent zmesh-console; do
    # cargo-deb warns that dev profiles are meant for testing only: that is the point here.
    cargo deb --locked -p "$p" --profile "$profile" --no-build --fast 2>&1 \
        | grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' || true
done
agent_deb=$(ls "$out"/zmesh_*.deb)
console_deb=$(ls "$out"/zmesh-console_*.deb)
step "built $(basename "$agent_deb") ($(du -h "$agent_deb" | cut -f1)), $(basename "$console_deb") ($(du -h "$console_deb" | cut -f1))"

# --- contents -------------------------------------------------------------------------
expect_files() {
    local deb=$1; shift
    local list; list=$(dpkg-deb -c "$deb" | awk '{print $1, $6}')
    for f in "$@"; do
        local mode=${f%% *} path=${f#* }
        grep -qxF -- "$mode ./$path" <<<"$list" || fail "$(basename "$deb") lacks $path with mode $mode; it has:
$list"
    done
}
expect_files "$agent_deb" \
    "-rwxr-xr-x usr/bin/zmesh" \
    "-rw-r--r-- usr/lib/systemd/system/zmesh.service" \
    "-rw-r--r-- usr/lib/tmpfiles.d/zmesh.conf" \
    "-rw-r--r-- etc/default/zmesh" \
    "-rw-r--r-- usr/share/doc/zmesh/admin-guide.md" \
    "-rw-r--r-- usr/share/doc/zmesh/cli.md"
expect_files "$console_deb" \
    "-rwxr-xr-x usr/bin/zmesh-console" \
    "-rw-r--r-- usr/lib/systemd/system/zmesh-console.service" \
    "-rw-r--r-- usr/lib/sysusers.d/zmesh-console.conf" \
    "-rw-r--r-- usr/lib/tmpfiles.d/zmesh-console.conf" \
    "-rw-r--r-- etc/default/zmesh-console" \
    "-rw-r--r-- usr/share/doc/zmesh-console/auditor-guide.md"
dpkg-deb -c "$agent_deb" | grep -q 'zmesh-console' && fail "the agent package carries console files"
step "contents ok"

# --- control data and maintainer scripts -----------------------------------------------
[[ $(dpkg-deb -f "$agent_deb" Package) == zmesh ]] || fail "agent package name"
dpkg-deb -f "$agent_deb" Depends | grep -q iproute2 || fail "agent must depend on iproute2 (it runs ip)"
dpkg-deb -f "$agent_deb" Recommends | grep -q nftables || fail "agent must recommend nftables (source NAT for routers)"
dpkg-deb -f "$console_deb" Depends | grep -q sysusers || fail "console must depend on a sysusers provider"
for deb in "$agent_deb" "$console_deb"; do
    pkg=$(dpkg-deb -f "$deb" Package)
    ctl="$work/ctl-$pkg"
    dpkg-deb -e "$deb" "$ctl"
    grep -qx "/etc/default/$pkg" "$ctl/conffiles" || fail "$pkg: /etc/default/$pkg is not a conffile"
    for s in postinst prerm postrm; do
        [[ -x $ctl/$s ]] || fail "$pkg: no executable $s"
        sh -n "$ctl/$s" || fail "$pkg: $s has a syntax error"
        grep -q '#DEBHELPER#' "$ctl/$s" && fail "$pkg: $s still has the #DEBHELPER# token"
    done
    # State is deleted only on purge: every rm -rf of /var/lib sits in a purge branch.
    grep -n 'rm -rf' "$ctl/postinst" "$ctl/prerm" && fail "$pkg: rm -rf outside postrm"
    awk '/if \[ "\$1" = "purge" \]/{p=1} /^fi/{p=0} /rm -rf/{ if (!p) bad=1 } END{exit bad}' \
        "$ctl/postrm" || fail "$pkg: postrm deletes outside its purge branch"
done
step "control data and maintainer scripts ok"

# --- units in a throwaway root ---------------------------------------------------------
troot="$work/root"
mkdir -p "$troot"
dpkg -x "$agent_deb" "$troot"
dpkg -x "$console_deb" "$troot"
# The units' dependencies (multi-user.target, sysinit.target, ...) come from the host;
# -n never overwrites what the packages put there.
cp -an /usr/lib/systemd/system/. "$troot/usr/lib/systemd/system/"
for u in zmesh.service zmesh-console.service; do
    v=$(systemd-analyze verify --root="$troot" "$u" 2>&1) || fail "systemd-analyze verify $u: $v"
    [[ -z $v ]] || fail "systemd-analyze verify $u warns: $v"
    exposure=$(systemd-analyze security --offline=yes --root="$troot" --threshold=30 "$u" 2>&1 | tail -1) \
        || fail "$u hardening regressed: $exposure"
    step "$u: verify clean; ${exposure#→ } (threshold 3.0)"
done
"$troot/usr/bin/zmesh" --version >/dev/null || fail "packaged zmesh does not run"
"$troot/usr/bin/zmesh-console" --version >/dev/null || fail "packaged zmesh-console does not run"

# --- install on this machine -----------------------------------------------------------
if [[ -z ${CI:-} && -z ${ZMESH_TEST_INSTALL:-} ]]; then
    step "not installing on this machine (set CI or ZMESH_TEST_INSTALL=1 to)"
    step "OK"
    exit 0
fi
for p in zmesh zmesh-console; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
        fail "package $p is already installed here; refusing to touch it"
    fi
done
for d in /var/lib/zmesh /var/lib/zmesh-console; do
    [[ -e $d ]] && fail "$d exists; refusing to risk someone's state"
done

step "install.sh refuses bad input"
bash packaging/install.sh http://example.invalid/zmesh.deb 2>/dev/null && fail "install.sh took an http URL"
bash packaging/install.sh /nonexistent/zmesh.deb 2>/dev/null && fail "install.sh took a missing file"
bash packaging/install.sh "$console_deb" 2>/dev/null && fail "install.sh installed the console package"
bash packaging/install.sh "$agent_deb" --sha256 0000 2>/dev/null && fail "install.sh ignored a bad --sha256"

step "install.sh installs the agent"
log=$(bash packaging/install.sh "$agent_deb" --sha256 "$(sha256sum "$agent_deb" | cut -d' ' -f1)" \
    --console https://console.example:8443 2>&1) || fail "install.sh: $log"
grep -q 'sudo zmesh up --console https://console.example:8443 --enroll-key' <<<"$log" \
    || fail "install.sh did not print the next command: $log"
[[ -x /usr/bin/zmesh ]] || fail "/usr/bin/zmesh missing after install"
[[ -L /etc/systemd/system/multi-user.target.wants/zmesh.service ]] || fail "zmesh.service not enabled"
[[ $(stat -c %a /var/lib/zmesh) == 700 ]] || fail "/var/lib/zmesh is not 0700"
echo "device key stand-in" >/var/lib/zmesh/marker
dpkg -i "$agent_deb" >/dev/null || fail "reinstall (upgrade path) failed"
[[ -f /var/lib/zmesh/marker ]] || fail "upgrade deleted /var/lib/zmesh"
dpkg -r zmesh >/dev/null || fail "dpkg -r zmesh failed"
[[ -f /var/lib/zmesh/marker ]] || fail "remove deleted /var/lib/zmesh"
purge=$(dpkg -P zmesh 2>&1) || fail "dpkg -P zmesh: $purge"
[[ ! -e /var/lib/zmesh ]] || fail "purge kept /var/lib/zmesh"
grep -q 'deleting /var/lib/zmesh' <<<"$purge" || fail "purge did not say what it deleted: $purge"
step "agent: install, enable, upgrade, remove keep state; purge deletes it and says so"

step "console package: system user and data directory"
dpkg -i "$console_deb" >/dev/null || fail "dpkg -i console failed"
getent passwd zmesh-console >/dev/null || fail "no zmesh-console user"
[[ $(stat -c '%U %a' /var/lib/zmesh-console) == "zmesh-console 700" ]] \
    || fail "/var/lib/zmesh-console: $(stat -c '%U %a' /var/lib/zmesh-console)"
[[ -L /etc/systemd/system/multi-user.target.wants/zmesh-console.service ]] \
    && fail "zmesh-console.service must not be enabled before the admin configures it"
echo "database stand-in" >/var/lib/zmesh-console/marker
dpkg -i "$console_deb" >/dev/null || fail "console upgrade failed"
dpkg -r zmesh-console >/dev/null || fail "console remove failed"
[[ -f /var/lib/zmesh-console/marker ]] || fail "console upgrade or remove deleted data"
purge=$(dpkg -P zmesh-console 2>&1) || fail "dpkg -P zmesh-console: $purge"
[[ ! -e /var/lib/zmesh-console ]] || fail "purge kept /var/lib/zmesh-console"
step "console: user, 0700 data dir, not auto-enabled, data kept until purge"
step "OK"
