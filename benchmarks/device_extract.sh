#!/usr/bin/env bash
# Issue 15's GPU rows in one device call (see benchmarks/device_extract.py); extra arguments go to it.
#
#   bash benchmarks/device_extract.sh wheels   # here: download the wheels the device image lacks into .whl/
#   run(command="bash benchmarks/device_extract.sh", carry=[".whl"], timeout_s=540)   # on the device
#
# The device image has Python 3.12 with torch/transformers/numpy/opencv but not the slide readers; the
# device cannot reach a package index, so the wheels travel with the call (~38 MB, under carry's 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "wheels" ]]; then
  rm -rf .whl && mkdir -p .whl
  python3 -m pip download -q --dest .whl --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    openslide-python==1.4.7 openslide-bin==4.0.1.2 tiffslide==3.0.1 imagecodecs==2026.3.6 \
    torchdata==0.11.0 zarr==3.1.6 donfig==0.8.1.post1 google-crc32c==1.9.0 numcodecs==0.16.6 \
    tifffile==2026.3.3
  du -sh .whl
  exit 0
fi

[[ "${1:-}" == "run" ]] && shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD/src"
python3 benchmarks/device_extract.py --out "${OUT:-/tmp/device_extract}" "$@"
