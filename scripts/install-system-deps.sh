#!/usr/bin/env bash
# Debian packages the test suite drives as real clients (swaks; isync and mutt for later suites).
set -euo pipefail
needed=()
command -v swaks >/dev/null 2>&1 || needed+=(swaks)
command -v mbsync >/dev/null 2>&1 || needed+=(isync)
command -v mutt >/dev/null 2>&1 || needed+=(mutt)
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: need ${needed[*]}; run as root or: sudo apt-get install -y ${needed[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${needed[@]}" >/dev/null
echo "install-system-deps: installed ${needed[*]}"
