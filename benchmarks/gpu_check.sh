#!/usr/bin/env bash
# One call on a GPU machine (see README "Performance"): environment, the CUDA
# tests (bit-exactness of the Triton kernels), the FSQ benchmark with achieved
# GB/s against the device-to-device copy roofline, then kernel-level timings.
# Logs go to $OUT. About 3 minutes on an H200 once the machine is up.
#   bash benchmarks/gpu_check.sh
# Peers for the benchmark: wheels in .whl/ are installed to /tmp/site first.
set -o pipefail
OUT=${OUT:-/tmp/fsqkit_gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider tests/test_fsq_gpu.py \
    2>&1 | tee "$OUT/tests.log" | tail -25
timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/bench_fsq.py --device cuda --repeats 30 \
    --warmup 5 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
# The kernels' own bandwidth (CUDA events over back-to-back launches) per tile size.
timeout "${VARIANTS_TIMEOUT:-150}" python3 benchmarks/triton_variants.py 2>&1 | tee "$OUT/variants.log"
# Diagnostic: do exact bin edges exist on this GPU (the CPU kernel's forward mode)?
python3 -c "
import logging, torch  # INFO names the check that fails
logging.basicConfig(level=logging.INFO)
from fsqkit import FSQ
from fsqkit.quantizers._fsq_backends.edges import compute_bin_edges
for sym in (False, True):
    c = FSQ([8, 5, 5, 5], symmetric=sym).constants
    print('cuda bin edges, symmetric', sym, ':', compute_bin_edges(c, torch.device('cuda')) is not None)
" 2>&1 | tail -4
