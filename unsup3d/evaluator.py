"""SIDE and MAD of the model and of every baseline and yardstick: the one place they are computed.

:class:`DepthEvaluator` takes the factors of a batch (:class:`~unsup3d.factors.Factors`) and its ground-truth
depth and updates one :class:`~unsup3d.metrics.DepthMetrics` per method, in one pass:

* ``model``: the reconstruction's depth in the input view;
* ``constant``: a constant ("null") depth map (SIDE and MAD are scale invariant, so any constant);
* ``avg_gt``: the average ground-truth depth map of the training split (:func:`average_train_depth`, computed
  once by whoever builds the evaluator);
* ``prior_at_view`` / ``prior_at_true_view``: the recipe's canonical shape prior (its ellipsoid) rendered at the
  model's predicted view / at the true view (where the data records views);

and, where true views are known, the pose statistics (:func:`pose_statistics`) and the relief ratio. Every
path that scores depth goes through it: ``unsup3d-eval`` (``trainer.test``: :meth:`unsup3d.model.Unsup3D.test_step`),
validation (:meth:`~unsup3d.model.Unsup3D.validation_step`, with the average-depth baseline that
:class:`~unsup3d.training.callbacks.DepthBaselineRatios` hands it) and the bench's learning curve
(:func:`unsup3d.evaluation.evaluate`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from unsup3d.core import Unsup3DCore
from unsup3d.factors import Factors
from unsup3d.files.images import atomic_save_image
from unsup3d.metrics import (
    SIDE_SCALE,
    DepthMetrics,
    average_depth_map,
    evaluation_mask,
    side,
    side_untilted,
    to_paper_units,
)
from unsup3d.visualize import depth_to_image, factor_images, to_uint8

__all__ = [
    "DepthEvaluator", "EvalReport", "average_train_depth", "evaluation_batch", "pose_statistics", "METRIC_KEYS",
    "METHODS", "POSE_ANGLES", "PER_IMAGE_COLUMNS",
]

#: The methods an evaluation scores, in the order they are reported.
METHODS = ("model", "constant", "avg_gt", "prior_at_view", "prior_at_true_view")
METRIC_KEYS = ("side", "mad", "mad_original", "mae", "mse")
#: The rotation components of a view, in order: ``(rx, ry, rz)`` = pitch, yaw, roll.
POSE_ANGLES = ("pitch", "yaw", "roll")
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
    pose: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images,
            "pose": self.pose,
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


def evaluation_batch(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """``(images, depth, paths)`` of an evaluation batch (``{"image", "depth", "path"}``; ``path`` optional).

    Raises:
        ValueError: the batch has no ground-truth depth, saying which data has it.
    """
    if not isinstance(batch, Mapping) or "depth" not in batch:
        raise ValueError("evaluation needs ground-truth depth: use a dataset with has_depth=true "
                         "(<split>/image and <split>/depth folders)")
    paths = batch.get("path")
    return batch["image"], batch["depth"], None if paths is None else [str(p) for p in paths]


def _report_units(values: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    v = to_paper_units(values)
    return {k: (float(v[k]), float(v[f"{k}_std"])) for k in METRIC_KEYS}


def pose_statistics(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """How well predicted rotations follow the true ones.

    Args:
        pred, true: ``N x 3`` ``(rx, ry, rz)`` in radians (pitch, yaw, roll), predicted and true.

    Returns:
        ``<angle>_slope`` (least-squares slope of predicted against true: 1 is right; well under 1 with a
        high correlation is the bas-relief solution, too little rotation and too much relief),
        ``<angle>_corr`` (Pearson correlation) and ``<angle>_mean_deg`` (the mean prediction: an offset
        means the canonical frame drifted) for each of :data:`POSE_ANGLES`. NaN where undefined (a
        constant prediction has no correlation).

    Example:
        >>> true = torch.tensor([[0.0, -0.2, 0.1], [0.1, 0.0, 0.0], [0.2, 0.4, -0.1]])
        >>> stats = pose_statistics(0.5 * true, true)
        >>> round(stats["yaw_slope"], 6), round(stats["yaw_corr"], 6)
        (0.5, 1.0)
    """
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != 3:
        raise ValueError(f"pose_statistics expects two N x 3 rotations; got {tuple(pred.shape)} and {tuple(true.shape)}")
    pred, true = pred.double().cpu(), true.double().cpu()
    out = {}
    for j, name in enumerate(POSE_ANGLES):
        x, y = true[:, j] - true[:, j].mean(), pred[:, j] - pred[:, j].mean()
        sxx, syy, sxy = (x * x).sum(), (y * y).sum(), (x * y).sum()
        out[f"{name}_slope"] = float(sxy / sxx) if sxx > 0 else math.nan
        out[f"{name}_corr"] = float(sxy / (sxx * syy).sqrt()) if sxx > 0 and syy > 0 else math.nan
        out[f"{name}_mean_deg"] = float(pred[:, j].mean() * 180 / math.pi)
    return out


def _true_view(true_views: Mapping[str, Sequence[float]], path: str) -> Sequence[float]:
    key = str(Path(path).resolve())
    if key not in true_views:
        raise KeyError(f"no true view recorded for {path}: the views (params.json) belong to another split or "
                       "dataset")
    return true_views[key]


def _save_outputs(min_depth: float, max_depth: float, f: Factors, gt: torch.Tensor, paths: list[str], out: Path,
                  start: int) -> None:
    """Per-image maps as PNGs under ``out/<index>_<stem>/``."""
    rng = max_depth - min_depth
    images = factor_images(f, min_depth, max_depth)
    err = (f.recon_depth - gt).abs() / rng
    maps = {
        "input": images["input"],
        "canonical_depth": images["canon_depth"],
        "canonical_albedo": images["canon_albedo"],
        "canonical_normal": images["canon_normal"],
        "canonical_shading": images["canon_shading"],
        "canonical_image": images["canon_image"],
        "reconstruction": images["recon_image"],
        "recon_depth": images["recon_depth"],
        "gt_depth": depth_to_image(gt, min_depth, max_depth),
        "depth_error": (err * 4).clamp(0, 1).unsqueeze(1),
    }
    for i, path in enumerate(paths):
        folder = out / f"{start + i:05d}_{Path(path).stem}"
        for name, tensor in maps.items():
            arr = to_uint8(tensor[i].float())
            atomic_save_image(folder / f"{name}.png", arr[..., 0] if arr.shape[-1] == 1 else arr)




class DepthEvaluator(nn.Module):
    """One :class:`~unsup3d.metrics.DepthMetrics` per method, updated from the model's factors in one pass.

    A module (its metrics follow the device, and under DDP they are reduced over ranks when computed), but it
    holds no network: the core is an argument of :meth:`update`.

    Args:
        core: the model core (its camera and depth range build the metrics; it is not kept).
        avg_gt_depth: ``S x S`` average training depth: adds the ``avg_gt`` baseline (also later, by
            :meth:`set_average_depth`).
        true_views: ``resolved image path -> (rx, ry, rz, tx, ty, tz)`` (radians): adds
            ``prior_at_true_view``, the pose statistics and the relief ratio.
        prior_height: height of the prior's ellipsoid (a fraction of the depth range; the recipe's
            ``depth_prior_height``).
        yardsticks: score ``constant`` and ``prior_at_view`` too (``False``: the model alone, plus ``avg_gt``
            when given, as validation does).
        image_dir: per-image maps are written under ``image_dir/<index>_<stem>/`` as PNGs.

    Example:
        >>> core = Unsup3DCore(image_size=32, width=0.125).eval()
        >>> ev = DepthEvaluator(core)
        >>> with torch.no_grad():
        ...     ev.update(core, core(torch.rand(2, 3, 32, 32)), torch.full((2, 32, 32), 1.0))
        >>> sorted(ev.report().scores)
        ['constant', 'model', 'prior_at_view']
    """

    def __init__(self, core: Unsup3DCore, avg_gt_depth: torch.Tensor | None = None,
                 true_views: Mapping[str, Sequence[float]] | None = None, prior_height: float = 0.5,
                 yardsticks: bool = True, image_dir: Path | None = None) -> None:
        super().__init__()
        self.fov, self.min_depth, self.max_depth = core.fov, core.min_depth, core.max_depth
        self.true_views, self.prior_height = true_views, float(prior_height)
        self.image_dir = None if image_dir is None else Path(image_dir)
        names = {"model"} | ({"constant", "prior_at_view"} if yardsticks else set())
        names |= {"prior_at_true_view"} if true_views is not None else set()
        self.metrics = nn.ModuleDict({m: self._metric() for m in METHODS if m in names})
        self.avg_gt_depth: torch.Tensor | None = None
        if avg_gt_depth is not None:
            self.set_average_depth(avg_gt_depth)
        self.reset()

    def _metric(self) -> DepthMetrics:
        return DepthMetrics(fov=self.fov, background_depth=self.max_depth)

    def set_average_depth(self, avg_gt_depth: torch.Tensor) -> None:
        """Score the ``avg_gt`` baseline from now on: ``avg_gt_depth`` (``S x S``) for every image."""
        device = self.metrics["model"].device
        self.avg_gt_depth = avg_gt_depth.detach().float()
        if "avg_gt" not in self.metrics:
            metrics = {**self.metrics, "avg_gt": self._metric().to(device)}
            self.metrics = nn.ModuleDict({m: metrics[m] for m in METHODS if m in metrics})

    def reset(self) -> None:
        """Forget every update (the metrics, the poses, the per-image paths)."""
        for metric in self.metrics.values():
            metric.reset()
        self.paths: list[str] = []
        self._pred_rot: list[torch.Tensor] = []
        self._true_rot: list[torch.Tensor] = []
        self._relief: list[float] = []
        self._alpha: list[float] = []
        self._side: list[torch.Tensor] = []  # the model's SIDE, untilted SIDE and lean per image (side_untilted)

    @property
    def num_images(self) -> int:
        return len(self.paths)

    @torch.no_grad()
    def update(self, core: Unsup3DCore, f: Factors, gt: torch.Tensor, paths: Sequence[str] | None = None) -> None:
        """Score one batch.

        Args:
            core: the model core that produced ``f`` (its renderer places the prior).
            f: its factors, with the reconstruction (``recon_depth`` ``B x S x S``) and the view.
            gt: ``B x S x S`` ground-truth depth.
            paths: the ``B`` image paths (default ``#<index>``); needed with ``true_views``.
        """
        gt = gt.to(f.recon_depth.device, f.recon_depth.dtype)
        paths = [str(p) for p in (paths if paths is not None else
                                  [f"#{len(self.paths) + i}" for i in range(len(gt))])][: len(gt)]
        renderer = core.renderer
        valid = renderer.visible_mask(f.recon_depth)
        m = self.metrics
        m["model"].update(f.recon_depth, gt, valid)
        # the pixels the per-image statistics (relief, foreground alpha) read, and the images with enough of them
        mask = evaluation_mask(gt, valid, self.max_depth)
        scored = (mask.flatten(1).sum(1) > 10).nonzero().flatten().tolist()
        if scored:
            untilted, slopes = side_untilted(f.recon_depth, gt, mask)
            self._side.append(torch.stack([side(f.recon_depth, gt, mask), untilted, slopes[:, 1]], 1)[scored].cpu())
        if "constant" in m:
            m["constant"].update(torch.ones_like(gt), gt, None)
        if "avg_gt" in m:
            m["avg_gt"].update(self.avg_gt_depth.to(gt).expand_as(gt), gt, None)
        if "prior_at_view" in m or "prior_at_true_view" in m:
            priors = core.shape_prior(self.prior_height).to(gt).expand_as(gt)
        if "prior_at_view" in m:
            at_view = renderer.warp_canon_depth(priors, f.view)
            m["prior_at_view"].update(at_view, gt, renderer.visible_mask(at_view))
        if self.true_views is not None:
            true = torch.tensor([list(_true_view(self.true_views, p)) for p in paths], device=gt.device,
                                dtype=f.view.dtype)
            at_true = renderer.warp_canon_depth(priors, true)
            m["prior_at_true_view"].update(at_true, gt, renderer.visible_mask(at_true))
            self._pred_rot.append(f.view[:, :3].cpu())
            self._true_rot.append(true[:, :3].cpu())
            self._relief.extend(float(f.recon_depth[i][mask[i]].std() / gt[i][mask[i]].std()) for i in scored)
        if f.canon_alpha is not None:
            # How much of the true foreground the 3D layer renders: its canonical alpha at the predicted
            # view, averaged over the evaluation mask (near 0: the static background layer paints the
            # object and the depth learns nothing).
            alpha = renderer.render_view(f.canon_alpha.float(), f.canon_depth, f.view)[:, 0]
            self._alpha.extend(float(alpha[i][mask[i]].mean()) for i in scored)
        if self.image_dir is not None:
            _save_outputs(self.min_depth, self.max_depth, f, gt, paths, self.image_dir, start=len(self.paths))
        self.paths.extend(paths)

    def compute(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every method's metric values (:meth:`~unsup3d.metrics.DepthMetrics.compute`; SIDE in depth units,
        not x 10^-2), reduced over ranks under DDP."""
        return {name: metric.compute() for name, metric in self.metrics.items() if metric.update_called}

    def report(self) -> EvalReport:
        """The :class:`EvalReport` of everything updated so far (on this process).

        Raises:
            ValueError: nothing was updated.
        """
        if not self.paths:
            raise ValueError("the evaluation split is empty")
        scores = {m: _report_units(values) for m, values in self.compute().items()}
        ratios = {b: {k: scores["model"][k][0] / scores[b][k][0] if scores[b][k][0] else math.nan
                      for k in METRIC_KEYS} for b in scores if b != "model"}
        pose: dict[str, float] = {}
        if self._pred_rot:
            pose = pose_statistics(torch.cat(self._pred_rot), torch.cat(self._true_rot))
            pose["relief_ratio"] = float(torch.tensor(self._relief).median()) if self._relief else math.nan
        if self._alpha:
            pose["foreground_alpha"] = float(torch.tensor(self._alpha).mean())
        if self._side:
            full, untilted, lean = torch.cat(self._side).double().unbind(1)
            pose["side_untilted"] = float(untilted.mean()) * SIDE_SCALE
            pose["tilt_share"] = float(1 - untilted.pow(2).mean() / full.pow(2).mean())
            pose["lean_deg"] = math.degrees(math.atan(float(lean.mean()) / math.tan(math.radians(self.fov) / 2)))
        rows = []
        per_image = {m: to_paper_units(metric.per_image()) for m, metric in self.metrics.items()}
        for i, path in enumerate(self.paths):
            for m, values in per_image.items():
                row = {"path": path, "method": m}
                for k in METRIC_KEYS:
                    row[k] = float(values[k][i])
                row["num_pixels"] = int(values["num_pixels"][i])
                rows.append(row)
        return EvalReport(scores=scores, ratios=ratios, rows=rows, num_images=len(self.paths), pose=pose)
