#!/usr/bin/env bash
# GPU readiness check, one script on one CUDA GPU (under 8 minutes on an H100-class card):
#   1. the CUDA tests (every test parametrised over "cuda": precision / autocast on the GPU);
#   2. bench_train.py (the synthetic_cpu step and the original recipe's full-width step) and
#      bench_renderer.py, in fp32 and bf16-mixed;
#   3. 2,000 steps of the original synface recipe (batch 64, full width, bf16-mixed) on generated
#      synthetic faces, then unsup3d-eval: steps per second, SIDE / MAD against the baselines.
#
#   bash scripts/gpu_check.sh [OUTPUT_DIR]       (default outputs/gpu_check; PY=python for another
#                                                 interpreter; STEPS=2000)
#   DEVICE=cpu STEPS=2 NUM_TRAIN=64 bash scripts/gpu_check.sh /tmp/x    (a dry run of the pipeline on CPU)
#
# Ends with gpu_check_steps_per_second=..., gpu_check_side=... gpu_check_mad=... and the eval verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${1:-outputs/gpu_check}
STEPS=${STEPS:-2000}
DEVICE=${DEVICE:-cuda}
NUM_TRAIN=${NUM_TRAIN:-8000}
PARTS=${PARTS:-123}  # which of the three parts to run
mkdir -p "$OUT"
if [ "$DEVICE" = cpu ]; then
  TRAINER=(trainer=cpu trainer.precision=32-true dataset.batch_size=8 dataset.num_workers=0)
  BENCH=(--batch 4 --repeats 1)
  TEST_K="cuda and not cuda"
else
  TRAINER=(trainer=gpu)
  BENCH=(--repeats 10)
  TEST_K="cuda"
  "$PY" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch " + torch.__version__ + " sees no CUDA device (a CPU-only build?)")
print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
fi

if [[ $PARTS == *1* ]]; then
echo "== 1. CUDA tests"
rc=0
"$PY" -m pytest -q -p no:cacheprovider tests -k "$TEST_K" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ]  # 5: no test selected (the CPU dry run)
fi

[[ $PARTS == *2* ]] && echo "== 2. benchmarks"
for prec in 32-true bf16-mixed; do
  [[ $PARTS == *2* ]] || break
  "$PY" scripts/bench_train.py --device "$DEVICE" --width 0.25 --no-perceptual --precision "$prec" \
      --batch 32 "${BENCH[@]}"
  "$PY" scripts/bench_train.py --device "$DEVICE" --width 1.0 --precision "$prec" --batch 64 "${BENCH[@]}"
  "$PY" scripts/bench_renderer.py --device "$DEVICE" --precision "$prec" "${BENCH[@]}"
done

[[ $PARTS == *3* ]] || exit 0
echo "== 3. $STEPS steps of the synface recipe on generated synthetic faces"
# The recipe's perceptual loss needs ImageNet VGG16 weights; a machine without them (and without the
# network) trains with it off, and says so.
PERC=()
if [ -z "${UNSUP3D_VGG16_WEIGHTS:-}" ] && [ ! -f "${TORCH_HOME:-$HOME/.cache/torch}/hub/checkpoints/vgg16-397923af.pth" ] \
   && ! "$PY" -c 'import urllib.request; urllib.request.urlopen("https://download.pytorch.org", timeout=5)' 2>/dev/null; then
  echo "no VGG16 weights here and no network: training with model.lam_perc=0 (the recipe without its perceptual loss)"
  PERC=(model.lam_perc=0)
fi
DATA="$OUT/data"
[ -f "$DATA/test/params.json" ] || "$PY" scripts/make_synthetic.py --output "$DATA" --num-train "$NUM_TRAIN" \
    --num-val 256 --num-test 512 --seed 0 --quiet
start=$(date +%s.%N)
"$PY" scripts/train.py experiment=synface "${TRAINER[@]}" "${PERC[@]}" "dataset.root=$DATA" dataset.crop=null \
    "trainer.max_steps=$STEPS" trainer.max_epochs=-1 trainer.limit_val_batches=2 resume=false logger=csv \
    "hydra.run.dir=$OUT/train"
end=$(date +%s.%N)
"$PY" scripts/eval.py "checkpoint=$OUT/train/checkpoints/last.ckpt" dataset=synthetic "dataset.root=$DATA" \
    "hydra.run.dir=$OUT/eval" "device=$DEVICE" baseline_train_images=2000
"$PY" -c 'import json, sys
from unsup3d.evaluation import yardstick_verdict
scores = json.load(open(sys.argv[1]))["scores"]
seconds = float(sys.argv[3]) - float(sys.argv[2])
side, mad = (scores["model"][m]["mean"] for m in ("side", "mad_original"))
print(yardstick_verdict(scores))
print(f"gpu_check_steps_per_second={int(sys.argv[4]) / seconds:.2f} (training process, {seconds:.0f} s wall)")
print(f"gpu_check_side={side:.3f} gpu_check_mad={mad:.2f}")' "$OUT/eval/scores.json" "$start" "$end" "$STEPS"
