#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md, in one command on a machine with a GPU and JAX for it:
#
#     bash benchmarks/gpu.sh            # results printed, and kept under $OUT (default /tmp)
#     CONFIGS=accelerator bash benchmarks/gpu.sh   # bench_zarr's GPU configuration only
#
# jaxsinks runs from this checkout (PYTHONPATH), so nothing is installed; wheels in .whl/ (for
# example tensorstore for that machine's Python) are unpacked to /tmp/site first when present.
set -u
OUT=${OUT:-/tmp}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 BENCH_DIR=/tmp
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc
python3 -c "import sys, jax, jaxlib, numpy, tensorstore as ts; print(sys.version.split()[0], \
'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'numpy', numpy.__version__, \
'tensorstore', ts.__file__, jax.devices())"
python3 benchmarks/bench_device.py 2>&1 | tee "$OUT/bench_device.txt"
python3 benchmarks/bench_zarr.py --configs "${CONFIGS:-accelerator,all-cores}" --no-naive --no-memory --probes \
    --gib 1 --repeats 5 2>&1 | tee "$OUT/bench_zarr.txt"
