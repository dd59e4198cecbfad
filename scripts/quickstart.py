"""Quick start (`make quickstart`): the main job end to end on a CPU in under 15 minutes.

1. generate a small procedural synthetic face dataset (data/synthetic_quickstart; kept if present),
2. train `experiment=synthetic_cpu` for a step budget (the same model on a fast or a busy machine; a
   warning says when the machine runs far slower than expected; a re-run resumes and stops at the
   same step),
3. evaluate it against the constant and average-depth baselines on the test split,
4. export textured meshes and turntable videos for a few test images,
and print where everything is, and in one line whether the model beats both baselines on SIDE and MAD.
Every step runs the same command a user would type.

    python scripts/quickstart.py [--steps 1500] [--num-train 4000] [--logger wandb|csv|none]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from unsup3d.evaluation import yardstick_verdict

REPO = Path(__file__).resolve().parents[1]
#: Training steps: sized so that the whole quick start takes under 15 minutes on an idle 2-core CPU.
STEPS = 1500
#: Seconds per training step of experiment=synthetic_cpu on an idle 2-core CPU (warned about if far slower).
EXPECTED_STEP_S = 0.45


def run(cmd: list[str]) -> None:
    print(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"quickstart: step failed (exit {proc.returncode}): {' '.join(cmd)}")
    print(f"  ({time.time() - t:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps (the same model on any machine)")
    ap.add_argument("--num-train", type=int, default=4000)
    ap.add_argument("--num-test", type=int, default=100)
    ap.add_argument("--num-export", type=int, default=4, help="test images to export as meshes")
    ap.add_argument("--data", default="data/synthetic_quickstart")
    ap.add_argument("--output", default="outputs/quickstart")
    ap.add_argument("--logger", default="wandb", choices=["wandb", "csv", "tensorboard", "none"])
    args = ap.parse_args()
    py = sys.executable
    data, out = REPO / args.data, REPO / args.output
    start = time.time()

    if (data / "test" / "params.json").is_file():
        print(f"synthetic data already in {data}")
    else:
        run([py, "scripts/make_synthetic.py", "--output", str(data), "--num-train", str(args.num_train),
             "--num-val", "64", "--num-test", str(args.num_test), "--image-size", "64", "--seed", "0"])

    train_dir = out / "train"
    run([py, "scripts/train.py", "experiment=synthetic_cpu", f"dataset.root={data}", f"hydra.run.dir={train_dir}",
         "name=quickstart", f"logger={args.logger}", f"trainer.max_steps={args.steps}", "trainer.max_time=null",
         f"+callbacks.speed_check={{_target_:unsup3d.training.callbacks.SpeedCheck,expected_step_seconds:{EXPECTED_STEP_S}}}"])
    ckpt = train_dir / "checkpoints" / "last.ckpt"

    eval_dir = out / "eval"
    run([py, "scripts/eval.py", f"checkpoint={ckpt}", "dataset=synthetic", f"dataset.root={data}",
         "dataset.num_workers=0", f"hydra.run.dir={eval_dir}", "baseline_train_images=2000"])

    images = sorted((data / "test" / "image").glob("*.png"))[: args.num_export]
    export_dir = out / "export"
    run([py, "scripts/export.py", "--checkpoint", str(ckpt), "--output", str(export_dir), "--video",
         "--overwrite", *map(str, images)])

    print("\n" + "=" * 78)
    print(f"quickstart finished in {(time.time() - start) / 60:.1f} min. Outputs:")
    print(f"  data:         {data}")
    print(f"  checkpoints:  {train_dir / 'checkpoints'} (last.ckpt)")
    print(f"  image panels: {train_dir / 'images'}   turntables: {train_dir / 'videos'}")
    print(f"  scores:       {eval_dir / 'scores.txt'} (per image: {eval_dir / 'per_image.csv'})")
    print(f"  meshes:       {export_dir}/<image>/mesh.obj, mesh.glb, turntable and relighting videos")
    wandb_runs = sorted((train_dir / "wandb").glob("offline-run-*"))
    if wandb_runs:
        print(f"  W&B (offline): {wandb_runs[-1]}")
        print(f"                 sync it with: wandb sync {wandb_runs[-1]}")
    elif (train_dir / "wandb").is_dir():
        print(f"  W&B run files: {train_dir / 'wandb'}")
    scores = eval_dir / "scores.txt"
    if scores.is_file():
        print("\n" + scores.read_text())
    print(yardstick_verdict(json.loads((eval_dir / "scores.json").read_text())["scores"]))


if __name__ == "__main__":
    main()
