"""Quality benchmark: train `synthetic_cpu` on the procedural synthetic faces for a step budget, and
evaluate model and baselines on the test split at several points during training (a learning curve).

    python scripts/bench_quality.py [--steps 3000] [--minutes 30] [--evals 8] [--ablation]
                                    [--num-train 10000] [OVERRIDE ...]

Each run trains until `--steps` optimizer steps or `--minutes` of training, whichever comes first,
and is evaluated (by the same code as `unsup3d-eval`, on the 500 test images) at `--evals` evenly
spaced steps and at the end. Printed per run: a table of steps, training minutes (evaluations not
counted), SIDE and MAD, their ratios to the average-ground-truth-depth baseline, predicted-against-true
yaw slope / correlation and the relief ratio (1 is right; a yaw slope well under 1 with relief above 1
is the bas-relief solution). `--ablation` also trains without the symmetry prior
(`model.use_flip=false`) under the same budget. A PNG plot of both ratios against steps (recipe and
ablation) and a JSON of every row are written to `--output`. The last line is
`SIDE_ratio=<model/avg-gt> MAD_ratio=<model/avg-gt>` (MAD with the original's normal operator, as in
the paper's table). Targets: SIDE_ratio <= 0.40 and MAD_ratio <= 0.70 (the paper: 0.793/1.990 = 0.40
and 16.51/23.26 = 0.71). Extra Hydra overrides (e.g. `model.lr=1e-3`) are passed to training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLUMNS = [("step", "{:>6d}"), ("minutes", "{:>7.1f}"), ("side", "{:>7.3f}"), ("mad", "{:>6.2f}"),
           ("side_ratio", "{:>10.3f}"), ("mad_ratio", "{:>9.3f}"), ("yaw_slope", "{:>9.2f}"),
           ("yaw_corr", "{:>8.2f}"), ("relief_ratio", "{:>12.2f}")]


def ensure_data(root: Path, num_train: int, num_val: int, num_test: int, seed: int) -> None:
    from unsup3d.data.synthetic import SyntheticConfig, generate_dataset

    stamp = root / "bench_stamp.json"
    want = {"num_train": num_train, "num_val": num_val, "num_test": num_test, "seed": seed, "image_size": 64}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        print(f"using existing synthetic data in {root}")
        return
    if root.exists():
        shutil.rmtree(root)
    t = time.time()
    generate_dataset(root, num_train, num_val, num_test, seed, SyntheticConfig(image_size=64))
    stamp.write_text(json.dumps(want))
    print(f"generated {num_train + num_val + num_test} synthetic samples in {time.time() - t:.0f} s")


def header() -> str:
    return "  ".join(f"{name:>{len(fmt.format(1 if 'd' in fmt else 1.0))}}" for name, fmt in COLUMNS)


def format_row(row: dict) -> str:
    return "  ".join(fmt.format(row.get(name, float("nan"))) for name, fmt in COLUMNS)


def train_curve(name: str, root: Path, out: Path, steps: int, minutes: float, evals: int,
                overrides: list[str], seed: int, baseline) -> dict:
    from unsup3d.config import compose_config
    from unsup3d.data.synthetic import load_split_params
    from unsup3d.evaluation import LearningCurve
    from unsup3d.training import train

    avg, test_loader = baseline
    run_dir = out / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = compose_config("train", [
        "experiment=synthetic_cpu", f"dataset.root={root}", f"paths.output_dir={run_dir}", "logger=csv",
        f"trainer.max_steps={steps}", "trainer.max_time=null",
        f"seed={seed}", "resume=false", "callbacks.progress_bar=null", *overrides])
    _, records = load_split_params(root / "test")
    true_views = {str((root / "test" / r["image"]).resolve()): r["view"] for r in records}
    points = sorted({max(1, round(steps * k / evals)) for k in range(1, evals + 1)})
    print(f"\n[{name}] {steps} steps or {minutes:g} min; evaluating at steps {points}")
    print(header(), flush=True)
    curve = LearningCurve(test_loader, avg, points, true_views, on_row=lambda r: print(format_row(r), flush=True),
                          max_train_minutes=minutes)
    t = time.time()
    summary = train(cfg, extra_callbacks=[curve])
    wall = time.time() - t
    final = curve.rows[-1]
    print(f"[{name}] {summary['global_step']} steps in {final['minutes']:.1f} min of training "
          f"({wall / 60:.1f} min with evaluations): SIDE_ratio={final['side_ratio']:.3f} "
          f"MAD_ratio={final['mad_ratio']:.3f}")
    return {"rows": curve.rows, "steps": summary["global_step"], "overrides": overrides}


def plot(runs: dict, path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, key, target, label in ((axes[0], "side_ratio", 0.40, "SIDE / avg-GT SIDE"),
                                   (axes[1], "mad_ratio", 0.70, "MAD / avg-GT MAD")):
        for name, run in runs.items():
            rows = run["rows"]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="avg-GT baseline")
        ax.axhline(target, color="green", lw=0.8, ls="--", label=f"target {target}")
        const = [r[f"constant_{key.split('_')[0]}"] / r[f"avg_gt_{key.split('_')[0]}"] for r in next(iter(runs.values()))["rows"]]
        ax.axhline(const[-1], color="orange", lw=0.8, ls="-.", label="constant baseline")
        ax.set_xlabel("training steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synthetic_bench")
    ap.add_argument("--output", default="outputs/bench_quality")
    ap.add_argument("--num-train", type=int, default=10000)
    ap.add_argument("--num-val", type=int, default=200)
    ap.add_argument("--num-test", type=int, default=500)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=3000, help="training steps per run")
    ap.add_argument("--minutes", type=float, default=30.0, help="training-time cap per run (evaluations excluded)")
    ap.add_argument("--evals", type=int, default=8, help="evaluations per run (evenly spaced, plus the end)")
    ap.add_argument("--ablation", action="store_true", help="also train without the symmetry prior")
    ap.add_argument("--name", default="synthetic_cpu", help="label of the recipe run")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = ap.parse_args()
    if args.steps < 1 or args.minutes <= 0 or args.evals < 1:
        ap.error("--steps, --minutes and --evals must be positive")
    import torch

    from unsup3d.data import Unsup3DDataModule
    from unsup3d.evaluation import average_train_depth

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    root, out = Path(args.data), Path(args.output)
    ensure_data(root, args.num_train, args.num_val, args.num_test, args.data_seed)
    dm = Unsup3DDataModule(name="synthetic", root=str(root), has_depth=True, image_size=64, batch_size=50,
                           num_workers=0, train_flip=False, persistent_workers=False, pin_memory=False)
    dm.setup("fit")
    dm.setup("test")
    baseline = (average_train_depth(dm.dataloader("train"), 5000), dm.test_dataloader())
    runs = {args.name: train_curve(args.name, root, out, args.steps, args.minutes, args.evals, args.overrides,
                                   args.seed, baseline)}
    if args.ablation:
        runs["no flip"] = train_curve("no_flip", root, out, args.steps, args.minutes, args.evals,
                                      [*args.overrides, "model.use_flip=false"], args.seed, baseline)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(runs, indent=1))
    png = plot(runs, out / "quality_curve.png",
               f"synthetic faces, {args.num_train} train / {args.num_test} test; overrides: {' '.join(args.overrides) or '-'}")
    print("\nfinal rows")
    print(f"{'run':<14}" + header())
    for name, run in runs.items():
        print(f"{name:<14}" + format_row(run["rows"][-1]))
    last = runs[args.name]["rows"][-1]
    print(f"baselines: avg-GT SIDE {last['avg_gt_side']:.3f} MAD {last['avg_gt_mad']:.2f}; "
          f"constant SIDE {last['constant_side']:.3f} MAD {last['constant_mad']:.2f}")
    if png:
        print(f"plot: {png}   rows: {out / 'curves.json'}")
    sr, mr = last["side_ratio"], last["mad_ratio"]
    print(f"targets: SIDE_ratio <= 0.40 {'PASS' if sr <= 0.40 else 'FAIL'}, MAD_ratio <= 0.70 "
          f"{'PASS' if mr <= 0.70 else 'FAIL'}")
    print(f"SIDE_ratio={sr:.3f} MAD_ratio={mr:.3f}")


if __name__ == "__main__":
    main()
