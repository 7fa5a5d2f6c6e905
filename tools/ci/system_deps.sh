#!/usr/bin/env bash
# What the test suite needs from the system, installed when missing: Debian's Chromium for the monitor's
# browser test (tests/server/monitor/test_monitor_browser.py drives it with Playwright; Playwright never
# downloads a browser of its own here).
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium; } \
    || { echo "system_deps: could not install Debian's chromium (root or sudo needed) for the monitor's browser test" >&2; exit 1; }
fi
