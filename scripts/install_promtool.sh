#!/bin/sh
# promtool (Prometheus' rule checker) for tests/ops: from Debian's `prometheus` package.
# `make install` runs this when promtool is missing. Needs root or password-less sudo.
set -e
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
else
  echo "promtool is needed by the tests: apt-get install -y prometheus (as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || {
  $SUDO apt-get update -qq && $SUDO apt-get install -y --no-install-recommends prometheus; }
command -v promtool >/dev/null 2>&1 || { echo "promtool still missing after apt-get" >&2; exit 1; }
echo "promtool: $(promtool --version 2>&1 | head -1)"
