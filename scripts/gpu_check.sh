#!/usr/bin/env bash
# The GPU check of the CUDA issue, for the lent GPU machine (Python 3.12, torch with CUDA, nvcc, cmake, ninja,
# scikit-build-core, pybind11, pytest, hypothesis, cuda-gdb; no network). It
#   1. installs the wheel built beforehand (below), or builds lrptext with its CUDA kernels required (LRPTEXT_CUDA=ON),
#   2. runs the CUDA cases of the kernel and engine suites with LRPTEXT_REQUIRE_CUDA=1 (a skipped one fails): every
#      CUDA kernel against the float64 oracle (and so against the CPU kernels, held to the same oracle), and
#      explain() on CUDA models and tensors against the CPU; a crash is rerun under cuda-gdb for its native stack,
#   3. runs the GPU benchmarks: W1, W3 (also at batch 32) and W4 against torch forward + input gradient and zennit
#      on the same GPU, as same-run ratios, with peak GPU memory; W6 (MiniLM-L6's geometry with random weights:
#      its package is too large to carry) against the floor and the LXT-equivalent anchor,
#   4. profiles VGG-16 batch 32 and the digits CNN at batch 1024 (benchmarks/time_profile.py), and W6 at 1 x 128.
# Results: benchmarks/results/gpu-check.txt, workloads-cuda.md, transformers-cuda.md, profile-cuda.txt; its run
# time, behind the time limits below: docs/performance.md.
# Prepare on the development machine, once (scipy-openblas32 and zennit are missing there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#     -d .whl scipy-openblas32 zennit==1.0.0 captum transformers==5.25.0 huggingface_hub==2.4.0 httpx2 httpcore2 \
#     truststore kernels tomlkit
#   echo /.minilm/ >> .git/info/exclude && python benchmarks/encoders.py --export-config .minilm
# To spend the GPU's time on the checks rather than the compile, build the wheel here (Python 3.12, Hopper only):
#   LRPTEXT_CUDA=ON python3.12 -m pip wheel --no-deps -w .whl . -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90
# and carry it in .whl: a .whl/lrptext-*.whl is installed instead of building there (the build stage is skipped).
# transformers and huggingface_hub travel in the versions tested here (the GPU machine's are older), with the modules
# they import that it lacks (httpx2, httpcore2, truststore, kernels, tomlkit).
# Then run it with the device tool: command "bash scripts/gpu_check.sh", carry [".whl", ".minilm"], timeout_s 600.
# The device tool brings back at most 8 files: everything comes back as one archive, logs.tgz, rewritten after
# each stage so that a run cut off at its limit still returns what it did.
# Results (logs, benchmark JSON and table, profile) are written to benchmarks/results/, or into $OUT/logs.tgz there.
# Every stage runs under its own time limit and writes its whole log to $out; a failing stage does not stop the
# later ones (one lease of the GPU must tell as much as possible), and the script's status is the first failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/benchmarks/results
[ -z "${OUT:-}" ] || out=/tmp/gpu-check  # archived into $OUT/logs.tgz after every stage
mkdir -p "$out"
site=/tmp/lrptext-site
status=0 n=0
archive() { [ -z "${OUT:-}" ] || tar czf "$OUT/logs.tgz" -C "$out" . ; }
stage() {  # stage NAME LIMIT_S LOG COMMAND...: run, keep the log, remember the first failure
  local name=$1 limit=$2 log=$3; shift 3
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start))s"; tail -n 30 "$log"
  [ "$status" -ne 0 ] || status=$rc
  archive
  return $rc
}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$root"/.whl/*.whl || exit 1
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -n 2
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
if ! compgen -G "$root/.whl/lrptext-*.whl" > /dev/null; then
  stage build 300 "$out/build.log" env LRPTEXT_CUDA=ON python3 -m pip install -v --no-build-isolation --no-deps \
    --target "$site" "$root" -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 || exit 1
fi
cd /tmp  # not the source tree, so the installed package is the one tested
python3 -c "import lrptext; print(lrptext.build_info())" | tee -a "$out/gpu.txt"
ldd "$site"/lrptext/_core*.so >> "$out/gpu.txt" 2>&1
# The CUDA cases only (their ids or markers name cuda; CI runs the rest), in two stages so that the engine's slower
# transformer suite cannot starve the kernels'; failures are printed as they happen (scripts/live_failures.py).
timeout_option=$(python3 -c "import pytest_timeout" 2>/dev/null && echo --timeout=120)
cuda_tests() {  # cuda_tests NAME LIMIT_S FILE...
  local name=$1 limit=$2; shift 2
  stage "$name" "$limit" "$out/$name.log" env LRPTEXT_REQUIRE_CUDA=1 PYTHONPATH="$site:$root/scripts" \
    python3 -m pytest -q -rf --tb=short $timeout_option -p live_failures -p no:cacheprovider -c "$root/pyproject.toml" \
    --rootdir "$root" -k "cuda and not torch_backend_takes_over" "$@"
}
cuda_tests kernel-tests 150 \
  "$root"/tests/test_{linear_kernels,embedding_pooling,rule_vectors,bad_input,build,explain,properties}.py \
  "$root"/tests/test_{attention_kernel,layer_norm_softmax_kernels,layer_recurrent}.py
cuda_tests transformer-tests 120 "$root"/tests/test_transformers.py
if [ "$status" -ge 128 ]; then  # killed by a signal: rerun under cuda-gdb (no gdb there) for the native stack
  stage crash-backtrace 150 "$out/crash.log" cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt \
    -ex "info threads" --args python3 -X faulthandler -m pytest -q -x -p no:cacheprovider -c "$root/pyproject.toml" \
    --rootdir "$root" "$root"/tests/test_{linear_kernels,embedding_pooling,rule_vectors,bad_input}.py
fi
cd "$root"
# the convolutions' transposed pass through cuDNN's backward-data, the default
stage benchmark 150 "$out/benchmark.log" python3 benchmarks/workloads.py --device cuda \
  --only W1,W3,W4 --batches 32 --rounds 20 --out "$out"
stage W6 120 "$out/w6.log" python3 benchmarks/encoders.py --device cuda --weights random \
  --minilm-config "$root/.minilm" --rounds 10 --out "$out"
for case in "W3 VGG-16:32" "W4 digits CNN:1024"; do  # where the time goes, for the speed work
  stage "profile ${case}" 40 "$out/profile-$((++n)).log" python3 benchmarks/time_profile.py --device cuda \
    --workload "${case%:*}" --batch "${case#*:}"
done
stage "profile W6 b1x128" 40 "$out/profile-$((++n)).log" python3 benchmarks/encoders.py --device cuda \
  --weights random --minilm-config "$root/.minilm" --profile b1x128
cat "$out"/profile-*.log > "$out/profile.txt" && rm "$out"/profile-*.log
archive
exit $status
