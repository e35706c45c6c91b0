#!/bin/sh
# Installs the Debian packages epode needs to build, test and run its demo.
#   scripts/deps.sh            build + unit tests + demo (Prosody)
#   scripts/deps.sh --check    only report what is missing (exit 1 if anything is)
# On Debian/Ubuntu as root (or with sudo) it runs apt-get; elsewhere it lists
# the packages to install by hand.
set -eu
PKGS="build-essential cmake pkg-config libexpat1-dev libssl-dev libc-ares-dev libidn-dev
libcmocka-dev libcurl4-openssl-dev openssl prosody python3 iproute2 ca-certificates gsasl ejabberd
prosody-modules"
check_only=0
[ "${1:-}" = "--check" ] && check_only=1

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $PKGS; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
  done
else
  echo "deps: this is not a Debian system; install the equivalents of:" >&2
  echo "  $PKGS" | tr '\n' ' ' >&2; echo >&2
  exit 0
fi

[ -z "$missing" ] && exit 0
if [ $check_only = 1 ]; then
  echo "deps: missing Debian packages:$missing" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "deps: missing Debian packages:$missing" >&2
    echo "deps: run as root: apt-get install$missing" >&2
    exit 1
  fi
fi
echo "deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Package postinst scripts would start system-wide servers on the standard
# ports; the tests start their own on free ports, so keep those off.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
