#!/usr/bin/env bash
# Mutation testing of the critical modules (issue #31): tools/mutation/run.sh [--jobs N] MODULE...
# MODULE: a key of tools/mutation/targets.toml, e.g. host_plugin/core/frame_math.py. Runs at the lowest
# CPU priority; results under build/mutation/<module>/ (summary.txt, survivors.txt). Needs mutmut
# (the `dev` extra) in the active environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec nice -n 19 python tools/mutation/run.py "$@"
