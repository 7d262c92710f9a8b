#!/usr/bin/env bash
# Installs zennit 1.0.0, the anchor of our comparisons, into the active environment. It declares
# Requires-Python >= 3.11.11 and imports torchvision, so it needs --ignore-requires-python and --no-deps here;
# benchmarks/anchors/zennit_import.py (used by tests/test_zennit.py and the benchmarks) puts the torchvision stand-in beside this script on sys.path when no real
# torchvision imports. Optional: nothing in the test suite requires zennit.
set -euo pipefail
dir=$(mktemp -d)
python -m pip download --no-deps --ignore-requires-python --only-binary=:all: --python-version 3.12 zennit==1.0.0 -d "$dir"
python -m pip install --no-deps --ignore-requires-python "$dir"/zennit-1.0.0-*.whl
python -m pip install pillow  # zennit.image imports it
