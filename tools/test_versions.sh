#!/usr/bin/env bash
# Run the test suite under given torch / torchvision versions, in a venv of their own.
#
#   tools/test_versions.sh TORCH TORCHVISION [VENV [PYTEST ARGS...]]
#   tools/test_versions.sh 2.11.0 0.26.0                          # venv in /tmp/venv-torch2.11.0
#   tools/test_versions.sh 2.5.1 0.20.1 /work/venv-old -x tests/test_distributed.py
#
# Makes VENV with $PYTHON (default python3) unless it exists, installs the pinned torch and torchvision with
# requirements.txt and pytest (plus any pip requirement in $EXTRA, e.g. EXTRA='numpy<2'), prints the versions,
# and runs pytest from the repository root; its exit status is pytest's. The environment passes through
# (CFAMC_CIFAR10_JPEG=... for the real-data tests).
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
torch_version=$1 vision_version=$2
venv=${3:-/tmp/venv-torch$torch_version}
shift $(($# < 3 ? $# : 3))
root=$(cd "$(dirname "$0")/.." && pwd)

[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
# shellcheck disable=SC2086  # $EXTRA: zero or more requirements
"$venv/bin/python" -m pip install -q "torch==$torch_version" "torchvision==$vision_version" \
    -r "$root/requirements.txt" pytest ${EXTRA:-}
"$venv/bin/python" -c 'import sys, numpy, torch, torchvision
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}")'
cd "$root"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
