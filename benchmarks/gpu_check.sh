#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU. From the repository root, in a
# virtual environment with `pip install -e '.[test,cuda12]'` (or cuda13; on a machine without
# network, benchmarks/gpu_wheels.sh prepares what to carry and says how to run):
#
#     bash benchmarks/gpu_check.sh            # PYTHON=/path/to/python to pick the interpreter
#
# Records, under benchmarks/gpu/<date>-<card>/: the card, driver, CuPy and CUDA versions
# (environment.json, nvidia-smi.txt, info.txt), the GPU tests of every engine (pytest-gpu.txt),
# `smx parity configs/parity.yaml` over numpy, array-api-strict and each GPU engine (CuPy,
# PyTorch, JAX) in float32 and float64 (parity-<dtype>.txt/.json), and the engines' epochs
# beside a hand-written PyTorch CUDA loop (engines.json, from benchmarks/gpu_engines.py).
# Engines whose library is missing are left out of parity and say why in the tests.
# Exits non-zero if any of them failed; commit the folder.
set -uo pipefail
PY=${PYTHON:-python}

if ! env_json=$("$PY" - <<'PYEOF'
import json, platform, sys
from smx.backends.cupy_backend import CupyBackend
b = CupyBackend()
reason = b.unavailable_reason()
if reason:
    sys.exit(f"no usable GPU: {reason}")
print(json.dumps({"python": platform.python_version(), **b.versions(),
                  "devices": b.device_info()}, indent=2))
PYEOF
); then
    echo "gpu_check: CuPy cannot use a GPU here; nothing recorded" >&2
    exit 2
fi
card=$(printf '%s' "$env_json" | "$PY" -c \
    'import json,sys,re; print(re.sub(r"[^A-Za-z0-9]+","-",json.load(sys.stdin)["devices"][0]["name"]).strip("-"))')
out="benchmarks/gpu/$(date -u +%Y%m%d-%H%M%S)-${card}"
mkdir -p "$out"
printf '%s\n' "$env_json" > "$out/environment.json"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "(nvidia-smi not found)" > "$out/nvidia-smi.txt"
"$PY" -m smx info > "$out/info.txt" 2>&1

status=0
# JAX would otherwise reserve 75 % of the card up front, beside CuPy's and PyTorch's pools
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# every GPU-marked test (the Dask ones need dask-cuda: run them where it is installed)
"$PY" -m pytest -m gpu -rs -v -p no:cacheprovider tests/test_gpu.py tests/test_gpu_sparse.py \
    tests/test_checkpoint.py tests/test_bench.py tests/test_engine_selection.py \
    tests/test_hardware.py tests/test_sparse_paths.py > "$out/pytest-gpu.txt" 2>&1 || status=1
if grep -q "SKIPPED" "$out/pytest-gpu.txt"; then status=1; fi  # on a GPU nothing may skip
engines="numpy,array-api-strict,cupy"
for e in torch jax; do
    if "$PY" -c "import $e" 2>/dev/null; then engines="$engines,$e@cuda"; fi
done
for dtype in float32 float64; do
    "$PY" -m smx parity configs/parity.yaml --backends "$engines" \
        --dtype "$dtype" -o "$out/parity-$dtype.json" > "$out/parity-$dtype.txt" 2>&1 || status=1
done
"$PY" benchmarks/gpu_engines.py -o "$out/engines.json" > "$out/engines.txt" 2>&1 || status=1
tail -n 3 "$out/pytest-gpu.txt" "$out"/parity-*.txt
tail -n 20 "$out/engines.txt"
echo "gpu_check: recorded in $out ($([ $status = 0 ] && echo passed || echo FAILED))"
exit $status
