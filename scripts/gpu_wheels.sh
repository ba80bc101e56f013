#!/usr/bin/env bash
# Download, here (where PyPI is reachable), the wheels that the lent GPU machine lacks, for its
# Python 3.12 on manylinux x86_64, into .gpu-wheels/ (git-ignored: name it in the device
# call's `carry`), and check that they and the working tree that travels fit its 64 MiB.
#
#   scripts/gpu_wheels.sh [DIR]                      (DIR: default .gpu-wheels in the checkout)
#   PYTHON_VERSION=3.11 scripts/gpu_wheels.sh DIR    (another interpreter: tests/test_first_run.py)
#
# The GPU machine's image holds PyTorch 2.11, torchvision, NumPy, PyYAML, tqdm, scikit-learn,
# nvidia-ml-py (pynvml), psutil, pandas, requests, click, rich, typer and py-cpuinfo
# (docs/gpu.md) but not pydantic (bpfree.core.spec imports it: every command needs it) nor
# CodeCarbon. So exactly these are carried, each at the version installed here (the one the
# tests ran), without their dependencies (--no-deps: each one needed is named):
#   pydantic pydantic-core annotated-types typing-inspection typing-extensions   the spec
#   codecarbon rapidfuzz arrow                                                   CO2 (optional)
# scripts/gpu_first_run.sh installs them there with pip --no-index --target.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DIR=${1:-$REPO/.gpu-wheels}
PY=${PYTHON:-python3}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
LIMIT_MIB=${LIMIT_MIB:-64}
PACKAGES="pydantic pydantic-core annotated-types typing-inspection typing-extensions codecarbon rapidfuzz arrow"

# pin each to the version installed here, where there is one
specs=$("$PY" - $PACKAGES <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
)
mkdir -p "$DIR"
rm -f "$DIR"/*.whl  # one version of each: two would stop the install there
abi=cp${PYTHON_VERSION/./}
platforms=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64; do
    platforms="$platforms --platform $p"
done
echo "gpu_wheels: downloading for Python $PYTHON_VERSION ($abi), manylinux x86_64: $(echo $specs)"
# shellcheck disable=SC2086
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp --abi "$abi" --abi abi3 --abi none \
    $platforms -d "$DIR" $specs

# what travels: tracked and untracked-not-ignored files, shared/ if the checkout has one, and DIR
"$PY" - "$REPO" "$DIR" "$LIMIT_MIB" <<'EOF'
import subprocess
import sys
from pathlib import Path

repo, wheels, limit_mib = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
listed = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo, capture_output=True, check=True
).stdout.split(b"\0")
files = {repo / p.decode() for p in listed if p}
if (repo / "shared").is_dir():
    files |= set((repo / "shared").rglob("*"))
tree = sum(f.stat().st_size for f in files if f.is_file() and not f.is_relative_to(wheels))
carried = sorted(wheels.glob("*.whl"))
size = sum(w.stat().st_size for w in carried)
mib = 1024 * 1024
for w in carried:
    print(f"  {w.stat().st_size / mib:6.2f} MiB  {w.name}")
total = (tree + size) / mib
print(
    f"gpu_wheels: {len(carried)} wheels, {size / mib:.1f} MiB; working tree {tree / mib:.1f} MiB; "
    f"together {total:.1f} of {limit_mib:.0f} MiB"
)
if total > limit_mib:
    sys.exit(f"gpu_wheels: {total:.1f} MiB would not travel (limit {limit_mib:.0f} MiB): carry fewer wheels")
try:
    where = wheels.relative_to(repo)
except ValueError:
    where = wheels
print(f"gpu_wheels: ready; name {where} in the device call's carry")
EOF
