#!/usr/bin/env bash
# Fills .whl/ with the wheels a lent GPU machine lacks for the benchmarks (Python 3.12, x86-64).
#
# The lent machines have jax 0.11 (CUDA), flax, optax, orbax-checkpoint, tokenizers, torch and
# transformers, and no network. bertjax itself travels as source (PYTHONPATH=$PWD). Run here:
#
#   bash benchmarks/device_wheels.sh
#
# then, on the device, in the repository root (carry: .whl):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 &&
#   python3 benchmarks/gpu_suite.py --groups attention,base --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  ml_collections==1.1.0 grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 tensorboardX==2.6.5
python3 -m pip wheel -q --no-deps -w .whl seqeval==1.2.2  # an sdist only: built here, pure Python
ls -1 .whl
du -sh .whl
