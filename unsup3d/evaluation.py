"""Evaluate depth against ground truth: the model and two baselines, by the same code, in one run.

Metrics follow the paper (see :mod:`unsup3d.metrics`): SIDE (reported x 10^-2 like the paper) and
MAD (degrees) on the reconstruction's depth in the input view, plus masked MAE / MSE of depth.

Baselines:

* ``constant``: a constant ("null") depth map; SIDE and MAD are scale invariant, so any constant.
* ``avg_gt``: the average ground-truth depth map of the training split.

Yardsticks the model must beat to have learned shape of its own (not the prior's):

* ``prior_at_view``: the recipe's canonical shape prior (:meth:`Unsup3D.shape_prior`, the ellipsoid
  its depth prior pulls toward) rendered at the model's predicted view of each image;
* ``prior_at_true_view``: the same prior rendered at the true view (data that records its views, as
  the synthetic faces' ``params.json``).

Pose (where true views are known): least-squares slope and correlation of the predicted against the
true pitch, yaw and roll (:func:`pose_statistics`).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from unsup3d.checkpoint import load_model
from unsup3d.config import check_node, instantiate_node, run_dir
from unsup3d.core import core_of
from unsup3d.data.synthetic import load_true_views
from unsup3d.evaluator import (
    METRIC_KEYS,
    PER_IMAGE_COLUMNS,
    POSE_ANGLES,
    DepthEvaluator,
    EvalReport,
    average_train_depth,
    evaluation_batch,
    pose_statistics,
)
from unsup3d.files.atomic import atomic_save_json, atomic_save_text
from unsup3d.inference import eval_mode, resolve_device
from unsup3d.model import Unsup3D
from unsup3d.tracking import log_evaluation

__all__ = [
    "EvalReport", "evaluate", "average_train_depth", "METRIC_KEYS", "POSE_ANGLES", "PER_IMAGE_COLUMNS",
    "format_report", "write_report", "pose_statistics", "LearningCurve", "run_evaluation", "yardstick_verdict",
    "curve_row", "trainer_evaluate",
]

@torch.inference_mode()  # (and eager kernels: unsup3d.fused)
def evaluate(
    model: Unsup3D,
    loader: DataLoader,
    avg_gt_depth: torch.Tensor | None = None,
    device: str = "auto",
    max_images: int | None = None,
    image_dir: Path | None = None,
    progress: bool = True,
    true_views: Mapping[str, Sequence[float]] | None = None,
    prior_height: float | None = None,
) -> EvalReport:
    """Evaluate ``model``, the baselines and the prior yardsticks on a loader of ``{"image", "depth",
    "path"}`` batches, by the same metrics in one pass.

    Args:
        model: the model: an :class:`~unsup3d.core.Unsup3DCore` or the training module holding one (evaluated
            in eval mode; its mode is restored).
        loader: test batches: ``image`` B x 3 x S x S in [0, 1], ``depth`` B x S x S, ``path``.
        avg_gt_depth: ``S x S`` average training depth for the ``avg_gt`` baseline (skipped if None).
        device: "auto", "cpu", "cuda", ...
        max_images: stop after this many images.
        image_dir: if given, per-image outputs are written there (input, canonical depth/albedo/
            normal/shading, reconstruction, depth error maps).
        progress: show a progress bar.
        true_views: ``resolved image path -> (rx, ry, rz, tx, ty, tz)`` true view of each image (radians),
            e.g. :func:`unsup3d.data.synthetic.load_true_views`: adds ``prior_at_true_view`` and the pose
            statistics (:func:`pose_statistics`) and relief ratio to the report.
        prior_height: height of the ``prior_at_view`` ellipsoid (a fraction of the depth range); default the
            training module's ``depth_prior_height`` (the recipe's prior), 0.5 (the model's default) for a core.

    Returns:
        :class:`EvalReport`: scores of ``model``, ``constant``, ``avg_gt`` (with ``avg_gt_depth``),
        ``prior_at_view`` and ``prior_at_true_view`` (with ``true_views``); ``pose`` holds the pose
        statistics and ``relief_ratio`` (median over images of the std of the predicted depth over the
        evaluation mask divided by that of the ground truth: 1 is right), and always ``side_untilted`` (the
        model's SIDE with each image's best plane of the log-depth error removed,
        :func:`~unsup3d.metrics.side_untilted`), ``tilt_share`` (that plane's share of the squared SIDE:
        the part a right pose would remove) and ``lean_deg`` (the error's mean vertical tilt in degrees).
    """
    dev = resolve_device(device)
    mode = eval_mode(model)  # given back as it was at the end
    model = model.to(dev)
    core = core_of(model)
    if prior_height is None:
        prior_height = float(model.hparams.depth_prior_height) if isinstance(model, Unsup3D) else 0.5
    evaluator = DepthEvaluator(core, avg_gt_depth, true_views, prior_height, image_dir=image_dir).to(dev)
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    if max_images is not None and total is not None:
        total = min(total, max_images)
    bar = tqdm(total=total, desc="evaluating", unit="img") if progress else None
    try:
        for batch in loader:
            images, gt, paths = evaluation_batch(batch)
            if max_images is not None:
                keep = max_images - evaluator.num_images
                if keep <= 0:
                    break
                images, gt = images[:keep], gt[:keep]
            evaluator.update(core, core(images.to(dev)), gt.to(dev), paths)
            if bar is not None:
                bar.update(len(gt))
    finally:
        if bar is not None:
            bar.close()
        mode.restore()
    return evaluator.report()


def trainer_evaluate(
    model: Unsup3D,
    loader: DataLoader,
    avg_gt_depth: torch.Tensor | None = None,
    device: str = "auto",
    max_images: int | None = None,
    image_dir: Path | None = None,
    progress: bool = True,
    true_views: Mapping[str, Sequence[float]] | None = None,
) -> EvalReport:
    """:func:`evaluate` run by Lightning: ``trainer.test`` with the model's :meth:`~unsup3d.model.Unsup3D.test_step`,
    which scores every batch into a :class:`~unsup3d.evaluator.DepthEvaluator` with the same yardsticks (what
    ``unsup3d-eval`` does). Same arguments and report as :func:`evaluate`; the model must be the training module.
    """
    dev = resolve_device(device)
    accelerator = {"cuda": "gpu"}.get(dev.type, dev.type)
    if max_images is not None and hasattr(loader, "dataset") and len(loader.dataset) > max_images:
        loader = DataLoader(Subset(loader.dataset, range(max(0, int(max_images)))), batch_size=loader.batch_size,
                            num_workers=loader.num_workers, collate_fn=loader.collate_fn)
    mode = eval_mode(model)  # given back as it was at the end
    model.test_evaluator = DepthEvaluator(model.core, avg_gt_depth, true_views, model.hparams.depth_prior_height,
                                          image_dir=image_dir)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=progress, precision="32-true",
                         inference_mode=True)
    try:
        trainer.test(model, dataloaders=loader, verbose=False)
        return model.test_evaluator.report()
    finally:
        model.test_evaluator = None
        mode.restore()


class LearningCurve(pl.Callback):
    """Evaluate model and baselines on a test loader at chosen steps during training: a learning curve.

    At every global step in ``steps`` (after that optimizer step) and at the end of training, the
    model is evaluated by :func:`evaluate` (the same code as ``unsup3d-eval``), in eval mode without
    gradients, then put back in training mode. Training time is measured without the evaluations.

    Args:
        loader: test batches ``{"image", "depth", "path"}``.
        avg_gt_depth: ``S x S`` average training depth (the ``avg_gt`` baseline).
        steps: global steps to evaluate at.
        true_views: optional ``path -> view``: the prior at the true view and the pose statistics.
        on_row: optional callable receiving each row (e.g. to print it).
        max_train_minutes: stop training once this much training time (evaluations excluded) has passed.

    Attributes:
        rows: one dict per evaluation (:func:`curve_row`): ``step``, ``minutes`` (training time so far),
            every method's SIDE and MAD (original operator), the model's ratios to the ``avg_gt``
            baseline and to the better baseline, and the pose statistics.
        reports: the :class:`EvalReport` of each row.
    """

    def __init__(self, loader: DataLoader, avg_gt_depth: torch.Tensor, steps: Sequence[int],
                 true_views: Mapping[str, Sequence[float]] | None = None, on_row=None,
                 max_train_minutes: float | None = None) -> None:
        self.loader, self.avg = loader, avg_gt_depth
        self.steps = sorted({int(s) for s in steps})
        self.true_views, self.on_row = true_views, on_row
        self.max_train_minutes = max_train_minutes
        self.rows: list[dict[str, Any]] = []
        self.reports: list[EvalReport] = []
        self._t0: float | None = None
        self._eval_s = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._eval_s = 0.0

    def _evaluate(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        if self.rows and self.rows[-1]["step"] == step:
            return
        t = time.perf_counter()
        minutes = self.train_minutes()
        report = evaluate(pl_module, self.loader, avg_gt_depth=self.avg, device=str(pl_module.device),
                          progress=False, true_views=self.true_views)
        row = {"step": step, "minutes": minutes, **curve_row(report)}
        if hasattr(pl_module, "depth_prior_weight"):
            row["prior_weight"] = pl_module.depth_prior_weight(step)
        self.rows.append(row)
        self.reports.append(report)
        self._eval_s += time.perf_counter() - t
        if self.on_row is not None:
            self.on_row(row)

    def train_minutes(self) -> float:
        """Training time so far, without the evaluations."""
        return (time.perf_counter() - (self._t0 or time.perf_counter()) - self._eval_s) / 60

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if int(trainer.global_step) in self.steps:
            self._evaluate(trainer, pl_module)
        if self.max_train_minutes is not None and self.train_minutes() >= self.max_train_minutes:
            trainer.should_stop = True  # the training-time budget, evaluations not counted

    def on_train_end(self, trainer, pl_module) -> None:
        self._evaluate(trainer, pl_module)


def curve_row(report: EvalReport) -> dict[str, float]:
    """The figures of one evaluation as a flat row: ``<method>_side`` and ``<method>_mad`` (MAD with the
    original's normal operator, as in the paper's table) for every method, the model's as ``side`` and
    ``mad``; ``side_ratio`` / ``mad_ratio`` to the ``avg_gt`` baseline (where present);
    ``best_side_ratio`` / ``best_mad_ratio`` to the better of the two baselines on each metric; the
    model against the prior at the true view (``side_vs_prior`` / ``mad_vs_prior``, below 1 is better);
    and the pose statistics."""
    s = {m: (v["side"][0], v["mad_original"][0]) for m, v in report.scores.items()}
    row: dict[str, float] = {"side": s["model"][0], "mad": s["model"][1]}
    for m, (side, mad) in s.items():
        if m != "model":
            row[f"{m}_side"], row[f"{m}_mad"] = side, mad
    if "avg_gt" in s:
        row["side_ratio"], row["mad_ratio"] = s["model"][0] / s["avg_gt"][0], s["model"][1] / s["avg_gt"][1]
    bases = [b for b in ("constant", "avg_gt") if b in s]
    row["best_side_ratio"] = s["model"][0] / min(s[b][0] for b in bases)
    row["best_mad_ratio"] = s["model"][1] / min(s[b][1] for b in bases)
    prior = "prior_at_true_view" if "prior_at_true_view" in s else "prior_at_view"
    row["side_vs_prior"], row["mad_vs_prior"] = s["model"][0] / s[prior][0], s["model"][1] / s[prior][1]
    row.update(report.pose)
    return row


def yardstick_verdict(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: does the model beat the constant and average-depth baselines and the shape prior (at the
    true view where known, else at the predicted view) on SIDE and on MAD (the original's operator)?

    Args:
        scores: ``scores.json``'s ``"scores"``: ``method -> metric -> {"mean": ...}`` (or ``(mean, std)``).

    Example:
        >>> yardstick_verdict({"model": {"side": (0.7, 0.1), "mad_original": (18.0, 2.0)},
        ...                    "constant": {"side": (1.2, 0.2), "mad_original": (40.0, 3.0)}})
        'result: the model beats both baselines on SIDE and MAD (SIDE 0.70, MAD 18.0 deg; constant 1.20 / 40.0)'
    """
    def mean(method: str, metric: str) -> float:
        v = scores[method][metric]
        return float(v["mean"] if isinstance(v, Mapping) else v[0])

    prior = "prior_at_true_view" if "prior_at_true_view" in scores else "prior_at_view"
    others = [b for b in ("constant", "avg_gt", prior) if b in scores]
    worse = [f"{'SIDE' if metric == 'side' else 'MAD'} vs {other}" for other in others
             for metric in ("side", "mad_original") if mean("model", metric) >= mean(other, metric)]
    figures = ", ".join(f"{b} {mean(b, 'side'):.2f} / {mean(b, 'mad_original'):.1f}" for b in others)
    head = f"SIDE {mean('model', 'side'):.2f}, MAD {mean('model', 'mad_original'):.1f} deg"
    names = " and ".join(["both baselines"] + (["the shape prior" + (" at the true view" if prior.endswith("true_view") else " at the predicted view")] if prior in scores else []))
    if not worse:
        return f"result: the model beats {names} on SIDE and MAD ({head}; {figures})"
    return f"result: the model ({head}) does NOT beat them on {', '.join(worse)} ({figures})"


def format_report(report: EvalReport) -> str:
    """A plain-text table: methods side by side, then model/other ratios, then the pose statistics."""
    w = max(10, *(len("model/" + m) + 1 for m in report.scores))
    lines = [f"{'method':<{w}}" + "".join(f"{k:>22}" for k in METRIC_KEYS)]
    for m, s in report.scores.items():
        lines.append(f"{m:<{w}}" + "".join(f"{s[k][0]:>13.4f} ± {s[k][1]:<6.3f}" for k in METRIC_KEYS))
    for b, r in report.ratios.items():
        lines.append(f"{'model/' + b:<{w}}" + "".join(f"{r[k]:>22.3f}" for k in METRIC_KEYS))
    lines.append(f"({report.num_images} images; SIDE x 10^-2, MAD in degrees; mad_original uses the "
                 "original code's normal normalisation, as in the paper's table)")
    p = report.pose
    if "yaw_slope" in p:
        lines.append("pose, predicted against true: " + ", ".join(
            f"{a} slope {p[f'{a}_slope']:.2f} corr {p[f'{a}_corr']:.2f}" for a in POSE_ANGLES)
            + f"; relief ratio {p['relief_ratio']:.2f}")
    if "side_untilted" in p:
        lines.append(f"tilt: SIDE with each image's best plane of the log-depth error removed {p['side_untilted']:.3f} "
                     f"(the plane's share of SIDE^2: {p['tilt_share']:.2f}, what a right pose would remove); "
                     f"mean lean of the error {p['lean_deg']:+.1f} deg")
    if "foreground_alpha" in p:
        lines.append(f"foreground alpha {p['foreground_alpha']:.2f} (the background layer's share of the object: "
                     f"{1 - p['foreground_alpha']:.2f})")
    return "\n".join(lines)


def write_report(report: EvalReport, out_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``scores.json``, ``scores.txt`` and ``per_image.csv`` (atomically) into ``out_dir``."""
    out_dir = Path(out_dir)
    data = report.to_json()
    if extra:
        data.update(extra)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PER_IMAGE_COLUMNS)
    writer.writeheader()
    writer.writerows(report.rows)
    return {
        "scores_json": atomic_save_json(out_dir / "scores.json", data),
        "scores_txt": atomic_save_text(out_dir / "scores.txt", format_report(report) + "\n"),
        "per_image_csv": atomic_save_text(out_dir / "per_image.csv", buf.getvalue()),
    }


def run_evaluation(cfg: DictConfig) -> EvalReport:
    """Evaluate from a composed ``conf/eval.yaml`` config (``unsup3d-eval``, ``scripts/eval.py``).

    The checkpoint decides the input size and the depth range: ``renderer.min_depth/max_depth`` (which
    the dataset's ground-truth decoding range follows) and ``dataset.image_size`` are set from the
    model's hyper-parameters. Writes the report into the run directory (:func:`unsup3d.config.run_dir`);
    with ``wandb=true``, also logs it to W&B (:func:`unsup3d.tracking.log_evaluation`).
    """
    model = load_model(cfg.checkpoint, trust=bool(cfg.trust_checkpoint))
    core = model.core
    cfg.renderer.min_depth, cfg.renderer.max_depth = core.min_depth, core.max_depth
    check_node(cfg.dataset, "dataset")
    if not cfg.dataset.get("has_depth", False):
        raise ValueError(f"dataset '{cfg.dataset.get('name')}' has no ground-truth depth (dataset.has_depth=false); "
                         "evaluation needs <split>/image and <split>/depth folders")
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    out_dir = run_dir(cfg)
    fixed = {"image_size": core.image_size, "train_flip": False}  # the model decides the input size
    dm = instantiate_node(cfg.dataset, "dataset", **fixed)
    dm.setup("test" if split == "test" else "validate")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    avg = None
    if cfg.baselines:
        dm.setup("fit")
        avg = average_train_depth(dm.dataloader("train"), cfg.baseline_train_images)
    true_views = load_true_views(Path(str(cfg.dataset.root)) / str(cfg.dataset.get(f"{split}_split", split)))
    report = trainer_evaluate(model, loader, avg_gt_depth=avg, device=cfg.device, max_images=cfg.max_images,
                        image_dir=out_dir / "images" if cfg.save_images else None, true_views=true_views)
    data_cfg = {**OmegaConf.to_container(cfg.dataset, resolve=True), **fixed}
    data_cfg.pop("_target_", None)
    extra = {"checkpoint": str(cfg.checkpoint), "split": split, "dataset": data_cfg}
    paths = write_report(report, out_dir, extra=extra)
    print(format_report(report))
    for name, path in paths.items():
        print(f"{name}: {path}")
    if cfg.get("wandb"):  # the scores and a table of the per-image rows (offline without an API key)
        folder = log_evaluation({**report.to_json(), **extra}, report.rows, PER_IMAGE_COLUMNS, out_dir,
                                OmegaConf.to_container(cfg, resolve=True),
                                project=str(cfg.get("wandb_project") or "unsup3d-eval"))
        print(f"wandb: {folder}")
    return report
