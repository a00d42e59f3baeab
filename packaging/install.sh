#!/bin/sh
# Installs the zmesh agent from its Debian package and enables its systemd unit, then
# prints the command that enrolls this device.
#
#   sudo packaging/install.sh ./zmesh_0.1.0-1_amd64.deb
#   sudo packaging/install.sh https://downloads.example/zmesh_0.1.0-1_amd64.deb --sha256 HEX
#   options: --console URL (put it into the printed command), --no-start (enable only)
#
# A URL must be https and is fetched with curl; give --sha256 to check what arrives.
set -eu

usage() {
    echo "usage: $0 PACKAGE.deb|https://URL [--sha256 HEX] [--console URL] [--no-start]" >&2
    exit 2
}

src=""
sha=""
console="https://CONSOLE:8443"
start=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --sha256) [ $# -ge 2 ] || usage; sha="$2"; shift 2 ;;
        --console) [ $# -ge 2 ] || usage; console="$2"; shift 2 ;;
        --no-start) start=no; shift ;;
        -h|--help) usage ;;
        -*) echo "install.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$src" ] || usage; src="$1"; shift ;;
    esac
done
[ -n "$src" ] || usage

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0 ...)" >&2
    exit 1
fi

tmp=""
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

case "$src" in
    https://*)
        command -v curl >/dev/null 2>&1 || { echo "install.sh: curl is needed to fetch $src" >&2; exit 1; }
        tmp=$(mktemp -d)
        deb="$tmp/zmesh.deb"
        echo "install.sh: fetching $src"
        curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
            --max-time 300 -o "$deb" "$src"
        ;;
    http://*|ftp://*)
        echo "install.sh: refusing $src: only https URLs (or a local file)" >&2
        exit 1
        ;;
    *)
        deb="$src"
        [ -f "$deb" ] || { echo "install.sh: no such file: $deb" >&2; exit 1; }
        case "$deb" in /*) ;; *) deb="$(pwd)/$deb" ;; esac
        ;;
esac

if [ -n "$sha" ]; then
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        echo "install.sh: SHA-256 mismatch: expected $sha, got $got" >&2
        exit 1
    fi
fi

pkg=$(dpkg-deb -f "$deb" Package 2>/dev/null || true)
if [ "$pkg" != "zmesh" ]; then
    echo "install.sh: $src is not the zmesh agent package (Package: ${pkg:-unreadable})" >&2
    exit 1
fi

echo "install.sh: installing $(dpkg-deb -f "$deb" Package Version | tr '\n' ' ')"
if command -v apt-get >/dev/null 2>&1; then
    # apt resolves the dependencies (iproute2) that dpkg alone would not.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb"
else
    dpkg -i "$deb"
fi

if [ -d /run/systemd/system ]; then
    if [ "$start" = yes ]; then
        systemctl enable --now zmesh.service
    else
        systemctl enable zmesh.service
    fi
    echo "install.sh: zmesh.service is $(systemctl is-active zmesh.service || true)"
else
    # Not booted with systemd (a container, a chroot): the package has still enabled the
    # unit for the next boot; start the daemon by hand meanwhile.
    echo "install.sh: systemd is not running here; start the daemon with: sudo zmesh daemon &"
fi

echo
echo "Next, enroll this device (an admin prints a key with \`zmesh-console keys create\`):"
echo "  sudo zmesh up --console $console --enroll-key zmek1.…"
