"""Evaluate depth against ground truth: the model and two baselines, by the same code, in one run.

Metrics follow the paper (see :mod:`unsup3d.metrics`): SIDE (reported x 10^-2 like the paper) and
MAD (degrees) on the reconstruction's depth in the input view, plus masked MAE / MSE of depth.

Baselines:

* ``constant``: a constant ("null") depth map; SIDE and MAD are scale invariant, so any constant.
* ``avg_gt``: the average ground-truth depth map of the training split.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from unsup3d.checkpoint import load_model, resolve_device
from unsup3d.config import check_node, instantiate_node, run_dir
from unsup3d.depth_encoding import depth_to_unit
from unsup3d.io import atomic_save_image, atomic_save_json, atomic_save_text
from unsup3d.loggers import log_evaluation
from unsup3d.metrics import SIDE_SCALE, DepthMetrics, average_depth_map, evaluation_mask
from unsup3d.model import Unsup3D

__all__ = [
    "EvalReport", "evaluate", "average_train_depth", "METRIC_KEYS", "format_report", "write_report",
    "pose_relief_diagnostics", "LearningCurve", "run_evaluation", "baseline_verdict", "PER_IMAGE_COLUMNS",
]

METRIC_KEYS = ("side", "mad", "mad_original", "mae", "mse")
#: The columns of ``per_image.csv`` (and of the W&B table of ``unsup3d-eval wandb=true``).
PER_IMAGE_COLUMNS = ["path", "method", *METRIC_KEYS, "num_pixels"]


@dataclass
class EvalReport:
    """Scores of every method: ``scores[method][metric] = (mean, std)`` in report units (SIDE
    x 10^-2, MAD in degrees), the per-image rows, and model/baseline ratios."""

    scores: dict[str, dict[str, tuple[float, float]]]
    ratios: dict[str, dict[str, float]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    num_images: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "units": {"side": "x 10^-2 (scale-invariant log depth error)", "mad": "degrees",
                      "mad_original": "degrees (the original code's normal normalisation)",
                      "mae": "depth units", "mse": "depth units squared"},
            "scores": {m: {k: {"mean": v[0], "std": v[1]} for k, v in s.items()} for m, s in self.scores.items()},
            "ratios": self.ratios,
        }


@torch.no_grad()
def average_train_depth(loader: Iterable[dict], max_images: int | None = None) -> torch.Tensor:
    """Average ground-truth depth map (``H x W``) over a loader of ``{"depth": B x H x W}`` batches."""
    def batches():
        seen = 0
        for batch in loader:
            if "depth" not in batch:
                raise ValueError("the training split has no ground-truth depth (dataset.has_depth=false)")
            depth = batch["depth"]
            if max_images is not None:
                depth = depth[: max(0, max_images - seen)]
            if depth.shape[0] == 0:
                return
            seen += depth.shape[0]
            yield depth

    return average_depth_map(batches())


def _report_units(values: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    out = {}
    for k in METRIC_KEYS:
        scale = SIDE_SCALE if k == "side" else 1.0
        out[k] = (float(values[k]) * scale, float(values[f"{k}_std"]) * scale)
    return out


@torch.no_grad()
def evaluate(
    model: Unsup3D,
    loader: DataLoader,
    avg_gt_depth: torch.Tensor | None = None,
    device: str = "auto",
    max_images: int | None = None,
    image_dir: Path | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``model`` and the baselines on a loader of ``{"image", "depth", "path"}`` batches.

    Args:
        model: the model (put in eval mode here).
        loader: test batches: ``image`` B x 3 x S x S in [0, 1], ``depth`` B x S x S, ``path``.
        avg_gt_depth: ``S x S`` average training depth for the ``avg_gt`` baseline (skipped if None).
        device: "auto", "cpu", "cuda", ...
        max_images: stop after this many images.
        image_dir: if given, per-image outputs are written there (input, canonical depth/albedo/
            normal/shading, reconstruction, depth error maps).
        progress: show a progress bar.

    Returns:
        :class:`EvalReport`.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    hp = model.hparams
    methods = {"model": DepthMetrics(fov=hp.fov, background_depth=hp.max_depth).to(dev),
               "constant": DepthMetrics(fov=hp.fov, background_depth=hp.max_depth).to(dev)}
    if avg_gt_depth is not None:
        methods["avg_gt"] = DepthMetrics(fov=hp.fov, background_depth=hp.max_depth).to(dev)
        avg_gt_depth = avg_gt_depth.to(dev)
    paths: list[str] = []
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    if max_images is not None and total is not None:
        total = min(total, max_images)
    bar = tqdm(total=total, desc="evaluating", unit="img") if progress else None
    for batch in loader:
        if "depth" not in batch:
            raise ValueError("evaluation needs ground-truth depth: use a dataset with has_depth=true "
                             "(<split>/image and <split>/depth folders)")
        images, gt = batch["image"], batch["depth"]
        if max_images is not None:
            keep = max_images - len(paths)
            if keep <= 0:
                break
            images, gt = images[:keep], gt[:keep]
        images, gt = images.to(dev), gt.to(dev).to(images.dtype)
        f = model(images)
        valid = model.renderer.visible_mask(f.recon_depth)
        methods["model"].update(f.recon_depth, gt, valid)
        methods["constant"].update(torch.ones_like(gt), gt, None)
        if avg_gt_depth is not None:
            methods["avg_gt"].update(avg_gt_depth.expand_as(gt), gt, None)
        batch_paths = [str(p) for p in batch.get("path", [f"#{len(paths) + i}" for i in range(len(gt))])]
        batch_paths = batch_paths[: len(gt)]
        if image_dir is not None:
            _save_outputs(model, f, gt, batch_paths, image_dir, start=len(paths))
        paths.extend(batch_paths)
        if bar is not None:
            bar.update(len(gt))
    if bar is not None:
        bar.close()
    if not paths:
        raise ValueError("the evaluation split is empty")

    scores = {m: _report_units(metric.compute()) for m, metric in methods.items()}
    ratios = {b: {k: scores["model"][k][0] / scores[b][k][0] if scores[b][k][0] else math.nan
                  for k in METRIC_KEYS} for b in methods if b != "model"}
    rows = []
    per_image = {m: metric.per_image() for m, metric in methods.items()}
    for i, path in enumerate(paths):
        for m, values in per_image.items():
            row = {"path": path, "method": m}
            for k in METRIC_KEYS:
                v = float(values[k][i]) * (SIDE_SCALE if k == "side" else 1.0)
                row[k] = v
            row["num_pixels"] = int(values["num_pixels"][i])
            rows.append(row)
    return EvalReport(scores=scores, ratios=ratios, rows=rows, num_images=len(paths))


def _save_outputs(model: Unsup3D, f, gt: torch.Tensor, paths: list[str], out: Path, start: int) -> None:
    """Per-image maps as PNGs under ``out/<index>_<stem>/``."""
    hp = model.hparams
    rng = hp.max_depth - hp.min_depth

    def depth_img(d):
        return depth_to_unit(d, hp.min_depth, hp.max_depth)

    err = (f.recon_depth - gt).abs() / rng
    maps = {
        "input": f.input / 2 + 0.5,
        "canonical_depth": depth_img(f.canon_depth).unsqueeze(1),
        "canonical_albedo": f.canon_albedo / 2 + 0.5,
        "canonical_normal": f.canon_normal.permute(0, 3, 1, 2) / 2 + 0.5,
        "canonical_shading": f.canon_shading.clamp(0, 1),
        "canonical_image": (f.canon_image / 2 + 0.5).clamp(0, 1),
        "reconstruction": (f.recon_image / 2 + 0.5).clamp(0, 1),
        "recon_depth": depth_img(f.recon_depth).unsqueeze(1),
        "gt_depth": depth_img(gt).unsqueeze(1),
        "depth_error": (err * 4).clamp(0, 1).unsqueeze(1),
    }
    for i, path in enumerate(paths):
        folder = out / f"{start + i:05d}_{Path(path).stem}"
        for name, tensor in maps.items():
            arr = (tensor[i].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
            arr = arr.astype(np.uint8)
            atomic_save_image(folder / f"{name}.png", arr[..., 0] if arr.shape[-1] == 1 else arr)


@torch.no_grad()
def pose_relief_diagnostics(model: Unsup3D, loader: DataLoader, true_views: Mapping[str, Sequence[float]]) -> dict:
    """What the model got right about pose and relief, against known viewpoints (synthetic data).

    Args:
        model: the model (run in eval mode; its mode is restored).
        loader: batches ``{"image", "depth", "path"}``.
        true_views: ``resolved path -> (rx, ry, ...)`` ground-truth view (radians) of each image.

    Returns:
        ``pitch_slope``, ``pitch_corr``, ``yaw_slope``, ``yaw_corr`` (least-squares slope and
        correlation of predicted against true angles: 1, 1 is right; a slope well below 1 with a high
        correlation is the bas-relief solution: too little rotation, too much relief),
        ``pitch_mean_deg``, ``yaw_mean_deg``, ``roll_mean_deg`` (mean predictions: an offset means the
        canonical frame drifted) and ``relief_ratio`` (median over images of the std of the predicted
        depth in the view over the evaluation mask, divided by that of the ground truth).
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    pred, true, relief = [], [], []
    try:
        for batch in loader:
            f = model(batch["image"].to(dev))
            gt = batch["depth"].to(dev)
            pred.append(f.view[:, :3].cpu())
            true.append(torch.tensor([list(true_views[str(Path(p).resolve())])[:2] for p in batch["path"]]))
            mask = evaluation_mask(gt, model.renderer.visible_mask(f.recon_depth), model.hparams.max_depth)
            for i in range(len(mask)):
                if mask[i].sum() > 10:
                    relief.append(float(f.recon_depth[i][mask[i]].std() / gt[i][mask[i]].std()))
    finally:
        model.train(was_training)
    pred, true = torch.cat(pred).double(), torch.cat(true).double()
    out = {}
    for j, name in enumerate(("pitch", "yaw")):
        x, y = true[:, j] - true[:, j].mean(), pred[:, j] - pred[:, j].mean()
        out[f"{name}_slope"] = float((x * y).sum() / (x * x).sum())
        out[f"{name}_corr"] = float((x * y).sum() / ((x * x).sum() * (y * y).sum()).sqrt())
    for j, name in enumerate(("pitch", "yaw", "roll")):
        out[f"{name}_mean_deg"] = float(pred[:, j].mean() * 180 / math.pi)
    out["relief_ratio"] = float(torch.tensor(relief).median()) if relief else math.nan
    return out


class LearningCurve(pl.Callback):
    """Evaluate model and baselines on a test loader at chosen steps during training: a learning curve.

    At every global step in ``steps`` (after that optimizer step) and at the end of training, the
    model is evaluated by :func:`evaluate` (the same code as ``unsup3d-eval``), in eval mode without
    gradients, then put back in training mode. Training time is measured without the evaluations.

    Args:
        loader: test batches ``{"image", "depth", "path"}``.
        avg_gt_depth: ``S x S`` average training depth (the ``avg_gt`` baseline).
        steps: global steps to evaluate at.
        true_views: optional ``path -> view`` for :func:`pose_relief_diagnostics`.
        on_row: optional callable receiving each row (e.g. to print it).
        max_train_minutes: stop training once this much training time (evaluations excluded) has passed.

    Attributes:
        rows: one dict per evaluation: ``step``, ``minutes`` (training time so far), ``side``,
            ``mad`` (original operator), ``side_ratio``, ``mad_ratio`` (to the ``avg_gt``
            baseline), the baselines' ``avg_gt_side``, ``avg_gt_mad``, and the diagnostics.
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
                          progress=False)
        row = {"step": step, "minutes": minutes}
        m, b = report.scores["model"], report.scores["avg_gt"]
        row.update(side=m["side"][0], mad=m["mad_original"][0], side_ratio=m["side"][0] / b["side"][0],
                   mad_ratio=m["mad_original"][0] / b["mad_original"][0], avg_gt_side=b["side"][0],
                   avg_gt_mad=b["mad_original"][0], constant_side=report.scores["constant"]["side"][0],
                   constant_mad=report.scores["constant"]["mad_original"][0])
        if self.true_views is not None:
            row.update(pose_relief_diagnostics(pl_module, self.loader, self.true_views))
        pl_module.train()
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


def baseline_verdict(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: does the model beat the constant and the average-depth baselines on SIDE and on MAD
    (the original's normal operator)?

    Args:
        scores: ``scores.json``'s ``"scores"``: ``method -> metric -> {"mean": ...}`` (or ``(mean, std)``).
    """
    def mean(method: str, metric: str) -> float:
        v = scores[method][metric]
        return float(v["mean"] if isinstance(v, Mapping) else v[0])

    bases = [b for b in ("constant", "avg_gt") if b in scores]
    worse = [f"{'SIDE' if metric == 'side' else 'MAD'} vs {base}" for base in bases
             for metric in ("side", "mad_original") if mean("model", metric) >= mean(base, metric)]
    figures = ", ".join(f"{b} {mean(b, 'side'):.2f} / {mean(b, 'mad_original'):.1f}" for b in bases)
    head = f"SIDE {mean('model', 'side'):.2f}, MAD {mean('model', 'mad_original'):.1f} deg"
    if not worse:
        return f"result: the model beats both baselines on SIDE and MAD ({head}; {figures})"
    return f"result: the model ({head}) does NOT beat the baselines on {', '.join(worse)} ({figures})"


def format_report(report: EvalReport) -> str:
    """A plain-text table: methods side by side, then model/baseline ratios."""
    lines = [f"{'method':<10}" + "".join(f"{k:>22}" for k in METRIC_KEYS)]
    for m, s in report.scores.items():
        lines.append(f"{m:<10}" + "".join(f"{s[k][0]:>13.4f} ± {s[k][1]:<6.3f}" for k in METRIC_KEYS))
    for b, r in report.ratios.items():
        lines.append(f"{'model/' + b:<10}" + "".join(f"{r[k]:>22.3f}" for k in METRIC_KEYS))
    lines.append(f"({report.num_images} images; SIDE x 10^-2, MAD in degrees; mad_original uses the "
                 "original code's normal normalisation, as in the paper's table)")
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
    with ``wandb=true``, also logs it to W&B (:func:`unsup3d.loggers.log_evaluation`).
    """
    model = load_model(cfg.checkpoint, trust=bool(cfg.trust_checkpoint))
    hp = model.hparams
    cfg.renderer.min_depth, cfg.renderer.max_depth = float(hp.min_depth), float(hp.max_depth)
    check_node(cfg.dataset, "dataset")
    if not cfg.dataset.get("has_depth", False):
        raise ValueError(f"dataset '{cfg.dataset.get('name')}' has no ground-truth depth (dataset.has_depth=false); "
                         "evaluation needs <split>/image and <split>/depth folders")
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    out_dir = run_dir(cfg)
    fixed = {"image_size": int(hp.image_size), "train_flip": False}  # the model decides the input size
    dm = instantiate_node(cfg.dataset, "dataset", **fixed)
    dm.setup("test" if split == "test" else "validate")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    avg = None
    if cfg.baselines:
        dm.setup("fit")
        avg = average_train_depth(dm.dataloader("train"), cfg.baseline_train_images)
    report = evaluate(model, loader, avg_gt_depth=avg, device=cfg.device, max_images=cfg.max_images,
                      image_dir=out_dir / "images" if cfg.save_images else None)
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
