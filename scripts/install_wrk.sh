#!/bin/sh
# wrk (a compiled HTTP load generator) for `make bench`: from Debian's `wrk` package, so the
# client is never what limits an HTTP figure. `make tools` runs this when wrk is missing.
# Needs root or password-less sudo.
set -e
command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
else
  echo "wrk is needed by make bench: apt-get install -y wrk (as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends wrk >/dev/null 2>&1 || {
  $SUDO apt-get update -qq && $SUDO apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends wrk; }
command -v wrk >/dev/null 2>&1 || { echo "wrk still missing after apt-get" >&2; exit 1; }
echo "wrk: $(wrk --version 2>&1 | head -1)"
