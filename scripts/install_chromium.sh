#!/bin/sh
# Headless Chromium for the console's browser tests (tests/console, Playwright drives it through
# executable_path): Debian's `chromium` package, since Playwright's own browser download needs a
# host this machine may not reach. `make tools` runs this when chromium is missing. Needs root or
# password-less sudo.
set -e
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
else
  echo "chromium is needed by tests/console: apt-get install -y chromium (as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1 || {
  $SUDO apt-get update -qq && $SUDO apt-get install -y --no-install-recommends chromium \
    fonts-dejavu-core; }
command -v chromium >/dev/null 2>&1 || { echo "chromium still missing after apt-get" >&2; exit 1; }
echo "chromium: $(dpkg-query -W -f '${Version}' chromium 2>/dev/null || echo installed)"
