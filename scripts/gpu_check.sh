#!/usr/bin/env bash
# The GPU check of the CUDA issue, for the lent GPU machine (Python 3.12, torch with CUDA, nvcc, cmake, ninja,
# scikit-build-core, pybind11, pytest, hypothesis, cuda-gdb; no network). It
#   1. builds lrptext with its CUDA kernels required (LRPTEXT_CUDA=ON),
#   2. runs the kernel and engine suites with LRPTEXT_REQUIRE_CUDA=1, so a skipped CUDA case fails the run: every
#      CUDA kernel against the float64 oracle (and so against the CPU kernels, held to the same oracle), and
#      explain() on CUDA models and tensors against the CPU; a crash is rerun under cuda-gdb for its native stack,
#   3. runs the GPU benchmarks: W1, W3 (also at batch 32) and W4 against torch forward + input gradient and zennit
#      on the same GPU, as same-run ratios, with peak GPU memory; W6 (MiniLM-L6's geometry with random weights:
#      its package is too large to carry) against the floor and the LXT-equivalent anchor,
#   4. profiles VGG-16 batch 32 and the digits CNN at batch 1024 (benchmarks/time_profile.py).
# Results: benchmarks/results/gpu-check.txt, workloads-cuda.md, transformers-cuda.md, profile-cuda.txt; its run
# time, behind the time limits below: docs/performance.md.
# Prepare on the development machine, once (scipy-openblas32 and zennit are missing there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#     -d .whl scipy-openblas32 zennit==1.0.0 captum
#   echo /.minilm/ >> .git/info/exclude && python benchmarks/encoders.py --export-config .minilm
# then run it with the device tool: command "bash scripts/gpu_check.sh", carry [".whl", ".minilm"], timeout_s 500.
# The device tool brings back at most 8 files: the logs come back as one archive, logs.tgz.
# Results (logs, benchmark JSON and table, profile) are written to $OUT there, or to benchmarks/results/ elsewhere.
# Every stage runs under its own time limit and writes its whole log to $out; a failing stage does not stop the
# later ones (one lease of the GPU must tell as much as possible), and the script's status is the first failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/benchmarks/results}
mkdir -p "$out"
site=/tmp/lrptext-site
status=0 n=0
stage() {  # stage NAME LIMIT_S LOG COMMAND...: run, keep the log, remember the first failure
  local name=$1 limit=$2 log=$3; shift 3
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start))s"; tail -n 30 "$log"
  [ "$status" -ne 0 ] || status=$rc
  return $rc
}
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$root"/.whl/*.whl || exit 1
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -n 2
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
stage build 300 "$out/build.log" env LRPTEXT_CUDA=ON python3 -m pip install -v --no-build-isolation --no-deps \
  --target "$site" "$root" || exit 1
cd /tmp  # not the source tree, so the installed package is the one tested
python3 -c "import lrptext; print(lrptext.build_info())" | tee -a "$out/gpu.txt"
ldd "$site"/lrptext/_core*.so >> "$out/gpu.txt" 2>&1
stage tests 240 "$out/gpu-tests.log" env LRPTEXT_REQUIRE_CUDA=1 python3 -m pytest -q -rf --tb=short \
  -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" \
  "$root"/tests/test_{linear_kernels,embedding_pooling,rule_vectors,bad_input,build,explain,properties}.py \
  "$root"/tests/test_{attention_kernel,layer_norm_softmax_kernels,layer_recurrent,transformers}.py \
  -k "not torch_backend_takes_over"
if [ "$status" -ge 128 ]; then  # killed by a signal: rerun under cuda-gdb (no gdb there) for the native stack
  stage crash-backtrace 150 "$out/crash.log" cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt \
    -ex "info threads" --args python3 -X faulthandler -m pytest -q -x -p no:cacheprovider -c "$root/pyproject.toml" \
    --rootdir "$root" "$root"/tests/test_{linear_kernels,embedding_pooling,rule_vectors,bad_input}.py
fi
cd "$root"
# cuDNN's backward-data for the convolutions' transposed pass (opt-in until this check has passed with it)
stage benchmark 240 "$out/benchmark.log" env LRPTEXT_CUDNN=1 python3 benchmarks/workloads.py --device cuda \
  --only W1,W3,W4 --batches 32 --rounds 20 --out "$out"
# cuDNN's algorithms timed on the first call (LRPTEXT_CUDNN=find) against its heuristics' first (the run above)
stage W3-timed-cudnn 150 "$out/benchmark-find.log" env LRPTEXT_CUDNN=find python3 benchmarks/workloads.py \
  --device cuda --only W3 --batches 32 --rounds 10 --out "$out/cudnn-find"
stage W6 240 "$out/w6.log" python3 benchmarks/encoders.py --device cuda --weights random \
  --minilm-config "$root/.minilm" --rounds 10 --out "$out"
for case in "W3 VGG-16:32" "W4 digits CNN:1024"; do  # where the time goes, for the speed work
  stage "profile ${case}" 60 "$out/profile-$((++n)).log" python3 benchmarks/time_profile.py --device cuda \
    --workload "${case%:*}" --batch "${case#*:}"
done
cat "$out"/profile-*.log > "$out/profile.txt" && rm "$out"/profile-*.log
if [ -n "${OUT:-}" ]; then  # the device tool's limit on files: the logs as one archive
  (cd "$out" && tar czf logs.tgz ./*.log cudnn-find && rm -r ./*.log cudnn-find)
fi
exit $status
