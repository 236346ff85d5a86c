#!/usr/bin/env bash
# Check ssenet's whole GPU path on a machine with one NVIDIA GPU, from a fresh clone, in a few
# minutes: install, then benchmarks/gpu_check.py (every stage in fp32 / bf16 / fp16, a rerun that
# recomputes nothing, CUDA against CPU, 2 torchrun ranks, the demo's CAM step GPU vs CPU).
#
#   bash benchmarks/gpu_check.sh                       # PyPI reachable
#   bash benchmarks/gpu_check.sh --wheels DIR          # no internet: missing packages from DIR
#   bash benchmarks/gpu_check.sh --docs docs/gpu-check.md    # also write the results page
#
# The machine's own PyTorch is kept: ssenet is installed without dependencies, then only the
# dependencies this Python lacks (or has too old) are installed, from DIR when given. Arguments
# after the options go to gpu_check.py. Exits non-zero when any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=""
if [ "${1:-}" = "--wheels" ]; then WHEELS=$2; shift 2; fi
OUT=${GPU_CHECK_OUT:-gpu_check_out}

missing=$("$PYTHON" - <<'PY'
import importlib.metadata as metadata
import re
import tomllib

from packaging.requirements import Requirement

with open("pyproject.toml", "rb") as f:
    wanted = tomllib.load(f)["project"]["dependencies"]
for text in wanted:
    requirement = Requirement(re.sub(r"\s*#.*", "", text))
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        print(requirement)
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        print(requirement)
PY
) || { echo "FAIL install: cannot read pyproject.toml's dependencies with $PYTHON"; exit 1; }

if [ -n "$missing" ]; then
  echo "installing what this Python lacks: $(echo $missing)"
  if [ -n "$WHEELS" ]; then
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation $missing \
      || echo "FAIL install: some dependencies are not in $WHEELS (the checks that need them fail)"
  else
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --no-build-isolation $missing \
      || echo "FAIL install: some dependencies could not be installed (see above)"
  fi
fi
"$PYTHON" -m pip install -q --no-deps --no-build-isolation . \
  || { echo "FAIL install: pip could not install ssenet"; exit 1; }

# `python benchmarks/gpu_check.py` puts benchmarks/, not src/, on the path: the installed
# package is the one checked.
exec "$PYTHON" benchmarks/gpu_check.py --out "$OUT" "$@"
