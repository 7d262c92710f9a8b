#!/usr/bin/env bash
# The prepared GPU check of the CUDA issue, for the lent GPU machine (Python 3.12, torch with CUDA, nvcc, cmake,
# ninja, scikit-build-core, pybind11, pytest, hypothesis; no network). It
#   1. builds lrptext with its CUDA kernels required (LRPTEXT_CUDA=ON),
#   2. runs the kernel and engine suites with LRPTEXT_REQUIRE_CUDA=1, so a skipped CUDA case fails the run: every
#      CUDA kernel against the float64 oracle (and so against the CPU kernels, held to the same oracle), and
#      explain() on CUDA models and tensors against the CPU,
#   3. runs the GPU benchmark: W1, W3 (also at batch 32) and W4 against torch forward + input gradient and zennit
#      on the same GPU, as same-run ratios.
# Prepare on the development machine, once (scipy-openblas32 and zennit are missing there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#     -d .whl scipy-openblas32 zennit==1.0.0
# then run it with the device tool: command "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 540.
# Results (log, benchmark JSON and table) are written to $OUT there, or to benchmarks/results/ elsewhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/benchmarks/results}
mkdir -p "$out"
site=/tmp/lrptext-site
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$root"/.whl/*.whl
export PYTHONPATH="$site"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
LRPTEXT_CUDA=ON python3 -m pip install -q --no-build-isolation --no-deps --target "$site" "$root" 2>&1 | tail -5
cd /tmp  # not the source tree, so the installed package is the one tested
python3 -c "import lrptext; print(lrptext.build_info())" | tee -a "$out/gpu.txt"
LRPTEXT_REQUIRE_CUDA=1 python3 -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" \
  "$root"/tests/test_{linear_kernels,embedding_pooling,rule_vectors,bad_input,build,explain,properties}.py \
  -k "not torch_backend_takes_over" 2>&1 | tee "$out/gpu-tests.log" | tail -15
cd "$root"
python3 benchmarks/workloads.py --device cuda --only W1,W3,W4 --batches 32 --rounds 5 --out "$out" 2>&1 | tail -25
