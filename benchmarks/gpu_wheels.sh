#!/usr/bin/env bash
# Prepares .whl/ for the lent GPU machine (no network there; it already has CuPy, PyTorch,
# JAX, NumPy, pytest, scikit-learn, pluggy, PyYAML, tqdm, matplotlib and threadpoolctl for
# its Python 3.12): smx's wheel and the dependencies it lacks, within the 64 MiB a run may
# carry. Run here, then on the device (carry [".whl"]), from the repository root:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site MPLBACKEND=Agg XLA_PYTHON_CLIENT_PREALLOCATE=false
#   PYTHON=python3 bash benchmarks/gpu_check.sh
#   python3 -m pytest -m gpu -p no:cacheprovider tests/test_gpu_sparse.py
#   python3 -m smx bench --only gpu -o "$OUT/bench"; cp -r benchmarks/gpu "$OUT/"
#
# .whl/ is build output: keep it out of git (echo /.whl/ >> .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir .whl
"$PY" -m pip wheel -q --no-deps -w .whl .
# pydantic-core is compiled: pin the pair and take the device's CPython 3.12 build
"$PY" -m pip download -q --only-binary=:all: --no-deps -d .whl \
    --python-version 3.12 --platform manylinux2014_x86_64 --implementation cp \
    pydantic==2.13.4 pydantic-core==2.46.4 annotated-types typing-inspection \
    typing-extensions array-api-compat array-api-strict
du -sh .whl && ls .whl
