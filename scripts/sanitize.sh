#!/usr/bin/env bash
# Builds lrptext._core with AddressSanitizer + UndefinedBehaviorSanitizer (CPU kernels; CUDA off; one module, for
# x86-64-v3 where the CPU has AVX2 and FMA, so that the code behind __AVX2__ is instrumented too) and runs the
# kernel test suites (dense, conv, embedding, pooling, attention, LayerNorm/softmax, recurrent) and the property
# tests against it. Any invalid access or undefined behaviour aborts the run.
# Run from an environment where lrptext's test extras are installed:  bash scripts/sanitize.sh
# The last clean run is recorded in docs/robustness.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python=$(command -v python)
site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
march=()
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then march=(-DCMAKE_CXX_FLAGS=-march=x86-64-v3); fi
LRPTEXT_CUDA=OFF cmake -S "$root" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLRPTEXT_SANITIZE=ON \
  "${march[@]}" -DPython_EXECUTABLE="$python" -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" \
  -DSKBUILD_PROJECT_VERSION=sanitized >/dev/null
cmake --build "$work/build" -j2 >/dev/null
mkdir -p "$work/stage"
cp -r "$root/lrptext" "$work/stage/"
rm -f "$work/stage/lrptext/"_core*.so
cp "$work/build/"_core*.so "$work/stage/lrptext/"
# grep reads all of ldd's output (grep -q would stop at the first match, and pipefail would take ldd's SIGPIPE)
ldd "$work/stage/lrptext/"_core*.so | grep libasan >/dev/null || { echo "the build is not instrumented" >&2; exit 1; }
cd "$work"  # not the source tree: python -m puts the working directory first on sys.path
# python -S with an explicit path: no .pth file runs, so an editable install of lrptext cannot shadow the stage.
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
PYTHONPATH="$work/stage:$site" \
  "$python" -S -m pytest -p no:cacheprovider -q -c "$root/pyproject.toml" --rootdir "$root" "$@" \
  "$root"/tests/test_{linear_kernels,elementwise_kernels,embedding_pooling,attention_kernel,layer_norm_softmax_kernels,layer_recurrent,bad_input,rule_vectors,build,properties}.py \
  -k "not torch_backend_takes_over and not cuda_kernels_are_compiled and not highest_cpu_level"
ldd "$work/stage/lrptext/"_core*.so | grep -E "libasan|libubsan"  # the tested module really is instrumented
