#!/usr/bin/env bash
# What the test suite needs from the system, installed when missing: Debian's Chromium for the monitor's
# browser test (tests/server/monitor/test_monitor_browser.py drives it with Playwright; Playwright never
# downloads a browser of its own here), and g++ for the CUDA tests (the kernel emulator builds the kernels'
# own source with it; nvcc, from NVIDIA's wheels, uses it as its host compiler).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; } \
    || { echo "system_deps: could not install Debian's ${missing[*]} (root or sudo needed) for the tests" >&2; exit 1; }
fi
