#!/usr/bin/env bash
# Issue 13's GPU checks in one go, for a session lent a GPU machine: the device tool runs this in the repository
# root (results under $OUT). That machine has no internet: it uses its own python3 and torch; pyro-ppl and the
# other pure-Python needs travel as wheels in .whl (see the device tool's README: pip download here, carry .whl,
# install with --target /tmp/site). Every step is bounded so that the whole fits one 10-minute command.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=python3
{ nvidia-smi; $PY -c "import torch, pyro; print(torch.__version__, pyro.__version__, torch.cuda.get_device_name())"; } \
  > "$OUT/machine.txt" 2>&1
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/training/test_cuda.py > "$OUT/test_cuda.txt" 2>&1
for batch in 100 1000; do
  timeout 120 $PY benchmarks/svi_vs_pytorch.py --device cuda --batch-size $batch --rounds 10 --chunk 20 --no-iwae \
    > "$OUT/svi_vs_pytorch-cuda-batch$batch.txt" 2>&1
done
timeout 120 $PY benchmarks/evaluation_speed.py --device cuda --num-images 10000 --num-samples 5000 --rounds 2 \
  > "$OUT/evaluation_speed-cuda-10000x5000.txt" 2>&1
tail -n 4 "$OUT"/*.txt
