"""Quick start (`make quickstart`): the main job end to end on a CPU in under 15 minutes.

1. generate a small procedural synthetic face dataset (data/synthetic_quickstart; kept if present),
2. train `experiment=synthetic_cpu` for a few minutes (resumes if re-run; the time budget is kept
   in the checkpoint, so a re-run does not train longer than the budget),
3. evaluate it against the constant and average-depth baselines on the test split,
4. export textured meshes and turntable videos for a few test images,
and print where everything is. Every step runs the same command a user would type.

    python scripts/quickstart.py [--minutes 8] [--num-train 4000] [--logger wandb|csv|none]
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> None:
    print(f"\n$ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"quickstart: step failed (exit {proc.returncode}): {' '.join(cmd)}")
    print(f"  ({time.time() - t:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget")
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

    mins, secs = int(args.minutes), int(round((args.minutes - int(args.minutes)) * 60))
    train_dir = out / "train"
    run([py, "scripts/train.py", "experiment=synthetic_cpu", f"dataset.root={data}", f"hydra.run.dir={train_dir}",
         "name=quickstart", f"logger={args.logger}", f"trainer.max_time=00:00:{mins:02d}:{secs:02d}"])
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


if __name__ == "__main__":
    main()
