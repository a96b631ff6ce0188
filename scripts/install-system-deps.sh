#!/usr/bin/env bash
# Debian packages the test suite drives as real programs: swaks, isync (mbsync) and mutt as clients;
# clamav-daemon (clamd, started by the tests on loopback with a local signature file), opendkim-tools
# (opendkim-testmsg for DKIM round trips) and postfix (its smtp-sink is a remote MX in the tests).
# Postfix is installed unconfigured ("No configuration"), so nothing starts listening on port 25.
set -euo pipefail
needed=()
command -v swaks >/dev/null 2>&1 || needed+=(swaks)
command -v mbsync >/dev/null 2>&1 || needed+=(isync)
command -v mutt >/dev/null 2>&1 || needed+=(mutt)
command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ] || needed+=(clamav-daemon)
command -v opendkim-testmsg >/dev/null 2>&1 || [ -x /usr/sbin/opendkim-testmsg ] || needed+=(opendkim-tools)
command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ] || needed+=(postfix)
if [ ${#needed[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: need ${needed[*]}; run as root or: sudo apt-get install -y ${needed[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq "${needed[@]}" >/dev/null
echo "install-system-deps: installed ${needed[*]}"
