"""Quality benchmark: train `synthetic_cpu` on named variants of the procedural synthetic faces for a step and
time budget, and evaluate the model with its baselines and yardsticks at several points during training
(learning curves), in one run.

    python scripts/bench_quality.py [--variants head,face,deep] [--steps 5000] [--minutes 30] [--evals 8]
                                    [--supervised] [--ablation] [--num-train 10000] [OVERRIDE ...]

For every variant (`unsup3d-make-synthetic --variant`; data generated once into `--data-root/<variant>`),
the recipe trains until `--steps` optimizer steps or `--minutes` of training, whichever comes first, and is
evaluated (by the same code as `unsup3d-eval`, on the test split) at `--evals` evenly spaced steps and at the
end. Each row prints: step, training minutes (evaluations not counted), the model's SIDE and MAD (the
original's normal operator, as in the paper's table), its ratios to the better of the constant and
average-depth baselines, the shape prior at the true view (`prior_at_true_view`: the recipe's ellipsoid
rendered at each image's true pose) and the model's ratios to it, the predicted-against-true pitch, yaw and
roll slopes (yaw also its correlation), the relief ratio, the SIDE left once each image's best plane of the
log-depth error is removed (untilt; tilt: the plane's share of SIDE^2, what a right pose would remove; lean: the
error's mean vertical tilt in degrees), and the depth prior's weight at that step.

`--supervised` also trains the same networks for the same budget on the ground-truth depth
(`model.supervised_depth=true`), the upper bound of this data and budget; `--ablation` trains without the
symmetry prior (`model.use_flip=false`). The final table has one block per variant with the model, the
baselines, both prior yardsticks, the supervised model, the pose slopes and minutes, then checks the targets:

* SIDE and MAD <= 0.40 / 0.70 of the better baseline;
* at least 25 % better than `prior_at_true_view` on both;
* yaw slope >= 0.7 with correlation >= 0.9;
* within 1.6x SIDE / 1.4x MAD of the supervised model (with `--supervised`).

A PNG plot of the curves and a JSON of every row are written to `--output`. The last line is
`variants=<n> all_targets=<PASS|FAIL>`. Extra Hydra overrides (e.g. `model.lr=1e-3`) go to training (not to
the supervised run's loss).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

COLUMNS = [("step", "{:>6d}"), ("minutes", "{:>7.1f}"), ("side", "{:>6.3f}"), ("mad", "{:>6.2f}"),
           ("best_side_ratio", "{:>9.3f}"), ("best_mad_ratio", "{:>8.3f}"),
           ("prior_at_true_view_side", "{:>8.3f}"), ("prior_at_true_view_mad", "{:>7.2f}"),
           ("side_vs_prior", "{:>8.3f}"), ("mad_vs_prior", "{:>8.3f}"), ("pitch_slope", "{:>7.2f}"),
           ("yaw_slope", "{:>7.2f}"), ("yaw_corr", "{:>6.2f}"), ("roll_slope", "{:>7.2f}"),
           ("relief_ratio", "{:>6.2f}"), ("side_untilted", "{:>6.3f}"), ("tilt_share", "{:>5.2f}"),
           ("lean_deg", "{:>5.1f}"), ("foreground_alpha", "{:>6.2f}"), ("prior_weight", "{:>6.2f}")]
HEADERS = {"best_side_ratio": "SIDE/bst", "best_mad_ratio": "MAD/bst", "prior_at_true_view_side": "pri_SIDE",
           "prior_at_true_view_mad": "pri_MAD", "side_vs_prior": "SIDE/pri", "mad_vs_prior": "MAD/pri",
           "pitch_slope": "pitch", "yaw_slope": "yaw", "yaw_corr": "y_corr", "roll_slope": "roll",
           "relief_ratio": "relief", "side_untilted": "untilt", "tilt_share": "tilt", "lean_deg": "lean", "foreground_alpha": "fg_a", "prior_weight": "prior_w"}
#: The targets of the recipe on every variant (issue 18).
TARGETS = {"best_side_ratio": 0.40, "best_mad_ratio": 0.70, "side_vs_prior": 0.75, "mad_vs_prior": 0.75,
           "yaw_slope": 0.7, "yaw_corr": 0.9, "side_vs_supervised": 1.6, "mad_vs_supervised": 1.4}


def ensure_data(root: Path, variant: str, num_train: int, num_val: int, num_test: int, seed: int) -> None:
    """Generate the variant's splits into ``root`` unless the same ones are there already."""
    from unsup3d.data.synthetic import generate_dataset, variant_config

    stamp = root / "bench_stamp.json"
    want = {"variant": variant, "num_train": num_train, "num_val": num_val, "num_test": num_test, "seed": seed,
            "image_size": 64}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        print(f"using existing synthetic data in {root}")
        return
    if root.exists():
        shutil.rmtree(root)
    t = time.time()
    generate_dataset(root, num_train, num_val, num_test, seed, variant_config(variant, image_size=64))
    stamp.write_text(json.dumps(want))
    print(f"generated {num_train + num_val + num_test} samples of variant {variant} in {time.time() - t:.0f} s")


def header() -> str:
    return "  ".join(f"{HEADERS.get(name, name):>{len(fmt.format(1 if 'd' in fmt else 1.0))}}" for name, fmt in COLUMNS)


def format_row(row: dict) -> str:
    return "  ".join(fmt.format(row.get(name, math.nan)) for name, fmt in COLUMNS)


def train_curve(name: str, root: Path, out: Path, steps: int, minutes: float, evals: int, overrides: list[str],
                seed: int, baseline) -> dict:
    from unsup3d.config import compose_config
    from unsup3d.data.synthetic import load_true_views
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
    points = sorted({max(1, round(steps * k / evals)) for k in range(1, evals + 1)})
    print(f"\n[{name}] {steps} steps or {minutes:g} min; evaluating at steps {points}")
    print(header(), flush=True)
    curve = LearningCurve(test_loader, avg, points, load_true_views(root / "test"),
                          on_row=lambda r: print(format_row(r), flush=True), max_train_minutes=minutes)
    t = time.time()
    summary = train(cfg, extra_callbacks=[curve])
    final = curve.rows[-1]
    print(f"[{name}] {summary['global_step']} steps in {final['minutes']:.1f} min of training "
          f"({(time.time() - t) / 60:.1f} min with evaluations): SIDE/best {final['best_side_ratio']:.3f} "
          f"MAD/best {final['best_mad_ratio']:.3f} SIDE/prior {final['side_vs_prior']:.3f} "
          f"MAD/prior {final['mad_vs_prior']:.3f} yaw {final['yaw_slope']:.2f} / {final['yaw_corr']:.2f}")
    return {"rows": curve.rows, "steps": summary["global_step"], "overrides": overrides}


def check_targets(model: dict, supervised: dict | None) -> dict[str, bool]:
    """Each target of :data:`TARGETS` met or not by the model's final row (``supervised``: that run's)."""
    ok = {k: model[k] <= TARGETS[k] for k in ("best_side_ratio", "best_mad_ratio", "side_vs_prior", "mad_vs_prior")}
    ok["yaw_slope"] = model["yaw_slope"] >= TARGETS["yaw_slope"]
    ok["yaw_corr"] = model["yaw_corr"] >= TARGETS["yaw_corr"]
    if supervised is not None:
        model["side_vs_supervised"] = model["side"] / supervised["side"]
        model["mad_vs_supervised"] = model["mad"] / supervised["mad"]
        ok["side_vs_supervised"] = model["side_vs_supervised"] <= TARGETS["side_vs_supervised"]
        ok["mad_vs_supervised"] = model["mad_vs_supervised"] <= TARGETS["mad_vs_supervised"]
    return ok


def final_table(results: dict) -> list[str]:
    """The final table: one block per variant (model, baselines, yardsticks, supervised, pose, minutes)."""
    lines = [f"{'variant':<9}{'method':<20}{'SIDE':>7}{'MAD':>7}  notes"]
    for variant, runs in results.items():
        last = runs["model"]["rows"][-1]
        for method in ("constant", "avg_gt", "prior_at_view", "prior_at_true_view"):
            lines.append(f"{variant:<9}{method:<20}{last[method + '_side']:>7.3f}{last[method + '_mad']:>7.2f}")
        for run, label in (("supervised", "supervised"), ("no_flip", "no flip"), ("model", "model")):
            if run not in runs:
                continue
            r = runs[run]["rows"][-1]
            note = f"{runs[run]['steps']} steps, {r['minutes']:.1f} min"
            if run != "supervised":
                note += (f"; pitch/yaw/roll slope {r['pitch_slope']:.2f}/{r['yaw_slope']:.2f}/{r['roll_slope']:.2f}"
                         f", yaw corr {r['yaw_corr']:.2f}, relief {r['relief_ratio']:.2f}")
            lines.append(f"{variant:<9}{label:<20}{r['side']:>7.3f}{r['mad']:>7.2f}  {note}")
        ok = runs["targets"]
        lines.append(f"{'':<9}targets: " + ", ".join(f"{k} {last.get(k, math.nan):.2f} {'PASS' if v else 'FAIL'}"
                                                       for k, v in ok.items()))
    return lines


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return None
    panels = (("best_side_ratio", "SIDE / better baseline", 0.40), ("best_mad_ratio", "MAD / better baseline", 0.70),
              ("side_vs_prior", "SIDE / prior at true view", 0.75), ("yaw_slope", "yaw slope", 0.7))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), dpi=110)
    for ax, (key, label, target) in zip(axes, panels):
        for variant, runs in results.items():
            for run, style in (("model", "-"), ("no_flip", ":")):
                if run in runs:
                    rows = runs[run]["rows"]
                    ax.plot([r["minutes"] for r in rows], [r[key] for r in rows], ls=style, marker="o", ms=3,
                            label=f"{variant}{'' if run == 'model' else ' no flip'}")
        ax.axhline(target, color="green", lw=0.8, ls="--", label=f"target {target}")
        ax.set_xlabel("training minutes")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="head", help="comma-separated variants (unsup3d-make-synthetic --list-variants)")
    ap.add_argument("--data-root", default="data/bench", help="the variants' data go to <data-root>/<variant>")
    ap.add_argument("--output", default="outputs/bench_quality")
    ap.add_argument("--num-train", type=int, default=10000)
    ap.add_argument("--num-val", type=int, default=200)
    ap.add_argument("--num-test", type=int, default=500)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=5000, help="training steps per run")
    ap.add_argument("--minutes", type=float, default=30.0, help="training-time cap per run (evaluations excluded)")
    ap.add_argument("--evals", type=int, default=8, help="evaluations per run (evenly spaced, plus the end)")
    ap.add_argument("--supervised", action="store_true", help="also train on the ground-truth depth (upper bound)")
    ap.add_argument("--ablation", action="store_true", help="also train without the symmetry prior")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = ap.parse_args()
    if args.steps < 1 or args.minutes <= 0 or args.evals < 1:
        ap.error("--steps, --minutes and --evals must be positive")
    import torch

    from unsup3d.data import Unsup3DDataModule
    from unsup3d.data.synthetic import VARIANTS
    from unsup3d.evaluation import average_train_depth

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        ap.error(f"unknown variants {unknown}; choose among {', '.join(VARIANTS)}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    out = Path(args.output)
    results: dict = {}
    for variant in variants:
        root = Path(args.data_root) / variant
        ensure_data(root, variant, args.num_train, args.num_val, args.num_test, args.data_seed)
        dm = Unsup3DDataModule(name="synthetic", root=str(root), has_depth=True, image_size=64, batch_size=50,
                               num_workers=0, train_flip=False, persistent_workers=False, pin_memory=False)
        dm.setup("fit")
        dm.setup("test")
        baseline = (average_train_depth(dm.dataloader("train"), 5000), dm.test_dataloader())
        runs = {"model": train_curve(variant, root, out, args.steps, args.minutes, args.evals, args.overrides,
                                     args.seed, baseline)}
        if args.supervised:
            runs["supervised"] = train_curve(f"{variant}_supervised", root, out, args.steps, args.minutes, args.evals,
                                             [*args.overrides, "model.supervised_depth=true"], args.seed, baseline)
        if args.ablation:
            runs["no_flip"] = train_curve(f"{variant}_no_flip", root, out, args.steps, args.minutes, args.evals,
                                          [*args.overrides, "model.use_flip=false"], args.seed, baseline)
        sup = runs["supervised"]["rows"][-1] if "supervised" in runs else None
        runs["targets"] = check_targets(runs["model"]["rows"][-1], sup)
        results[variant] = runs
        out.mkdir(parents=True, exist_ok=True)
        (out / "curves.json").write_text(json.dumps(results, indent=1))
    png = plot(results, out / "quality_curve.png")
    print("\nfinal table (SIDE x 10^-2, MAD in degrees with the original's normal operator)")
    print("\n".join(final_table(results)))
    if png:
        print(f"plot: {png}   rows: {out / 'curves.json'}")
    passed = all(all(r["targets"].values()) for r in results.values())
    print(f"variants={len(results)} all_targets={'PASS' if passed else 'FAIL'}")


if __name__ == "__main__":
    main()
