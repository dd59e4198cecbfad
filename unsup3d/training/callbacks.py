"""Lightning callbacks: image panels and turntable videos of a fixed validation batch.

The callback owns everything it needs (the fixed batch, its schedule); the model keeps no logging
state. Images are always written as PNG files under the run folder, and additionally sent to W&B or
TensorBoard when such a logger is attached. A logging failure (no ffmpeg, a full disk, a W&B error)
warns and never stops training.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from unsup3d.files.images import atomic_save_image
from unsup3d.files.mesh import grid_faces, grid_uvs, grid_vertices, write_glb
from unsup3d.files.video import write_video
from unsup3d.inference import eval_mode
from unsup3d.visualize import factor_panels, frames_to_grids, normal_shaded, to_uint8, turntable_frames

__all__ = ["ImageLogger", "DepthBaselineRatios", "SpeedCheck"]


def _batch_images(batch: Any) -> torch.Tensor | None:
    """The image tensor of a batch: ``batch["image"]``, the batch itself, or its first tensor."""
    if isinstance(batch, dict):
        for key in ("image", "images"):
            if torch.is_tensor(batch.get(key)):
                return batch[key]
        return None
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if torch.is_tensor(item) and item.ndim == 4:
                return item
    return None


def _first_batch(loaders: Any) -> Any:
    """First batch of a dataloader (or of the first one of a list / dict of dataloaders)."""
    if loaders is None:
        return None
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    elif isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if loaders is None:
        return None
    return next(iter(loaders))


class ImageLogger(pl.Callback):
    """Log factor panels and turntable videos of a fixed validation batch.

    Schedule (global rank 0 only):

    * every ``log_images_every_n_steps`` optimizer steps (and after the first one), the model is run in
      eval mode without gradients on the fixed batch; the grids of :func:`unsup3d.visualize.factor_panels`
      are written to ``<dir>/images/step_<N>/<name>.png`` and logged to W&B (``images/<name>``) or
      TensorBoard; with them, the textured mesh of the batch's first image is written to
      ``<dir>/images/step_<N>/mesh.glb`` (the mesh ``unsup3d-export`` writes: canonical depth grid, shaded
      canonical texture) and logged to W&B as a 3D object (``images/mesh``, ``wandb.Object3D``);
    * at the end of every ``video_every_n_epochs``-th validation epoch (not during the sanity check),
      turntables of the canonical image (``textured``) and of the shape alone (``shape``, a grey
      Lambertian rendering) are written to ``<dir>/videos/epoch_<E>_{textured,shape}.<video_format>``
      (each frame tiles the batch) and logged to W&B (``videos/<kind>``).

    ``<dir>`` is ``output_dir`` when given, else ``trainer.default_root_dir``.

    The fixed batch is the first batch of ``trainer.datamodule.val_dataloader()`` if there is one, else of
    the trainer's validation dataloaders; without validation data, the first training batch is used (with
    a warning). Its first ``max_items`` images are kept on the callback (on the CPU) in
    :attr:`fixed_images`.

    Args:
        log_images_every_n_steps: image period in global steps (0 or None: no images).
        max_items: images of the fixed batch to keep and show.
        video_every_n_epochs: video period in epochs (0 or None: no videos).
        num_frames: frames of the turntables (yaw from -90 to 90 degrees).
        video_size: render size of the video frames (default: the model's image size).
        fps: video frame rate.
        video_format: ``"mp4"`` (needs ffmpeg, shipped with imageio-ffmpeg) or ``"gif"``.
        output_dir: folder of the images and videos (default ``trainer.default_root_dir``).
    """

    def __init__(
        self,
        log_images_every_n_steps: int | None = 500,
        max_items: int = 16,
        video_every_n_epochs: int | None = 1,
        num_frames: int = 15,
        video_size: int | None = None,
        fps: float = 10,
        video_format: str = "mp4",
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        if video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format must be 'mp4' or 'gif', got {video_format!r}")
        if int(max_items) < 1:
            raise ValueError(f"max_items must be positive, got {max_items}")
        if int(num_frames) < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        self.log_images_every_n_steps = int(log_images_every_n_steps or 0)
        self.max_items = int(max_items)
        self.video_every_n_epochs = int(video_every_n_epochs or 0)
        self.num_frames = int(num_frames)
        self.video_size = None if video_size is None else int(video_size)
        self.fps = fps
        self.video_format = video_format
        self.output_dir = output_dir
        self.fixed_images: torch.Tensor | None = None  # max_items x 3 x S x S in [0, 1], on the CPU
        self._last_image_step: int | None = None
        self._fixed_from_train = False

    # ---------------------------------------------------------------------------------- helpers
    def _dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir if self.output_dir is not None else trainer.default_root_dir)

    def _set_fixed(self, batch: Any) -> bool:
        images = _batch_images(batch)
        if images is None:
            return False
        self.fixed_images = images[: self.max_items].detach().to("cpu", copy=True).float()
        return True

    def _find_val_batch(self, trainer: pl.Trainer) -> Any:
        def from_datamodule():
            dm = getattr(trainer, "datamodule", None)
            return None if dm is None else dm.val_dataloader()

        def from_loop():  # dataloaders given to fit() or defined on the module, before validation set them up
            # Lightning has no public accessor for them until validation first runs (trainer.val_dataloaders is
            # None before): its loop keeps them in the private _data_source. Asked last, after the public ways.
            source = trainer.fit_loop.epoch_loop.val_loop._data_source
            return source.dataloader() if source.is_defined() else None

        for get_loaders in (from_datamodule, lambda: trainer.val_dataloaders, from_loop):
            try:
                batch = _first_batch(get_loaders())
            except Exception:  # noqa: BLE001, S112 - no val_dataloader implemented, or it failed: try the next
                continue
            if batch is not None:
                return batch
        return None

    def _warn(self, what: str, exc: BaseException) -> None:
        warnings.warn(f"ImageLogger: {what} failed ({type(exc).__name__}: {exc}); training continues.",
                      RuntimeWarning, stacklevel=2)

    def _run_model(self, pl_module: pl.LightningModule):
        """Forward of the fixed batch in eval mode (under the callers' inference mode); every submodule's mode is
        restored."""
        param = next(pl_module.parameters(), None)
        device = param.device if param is not None else pl_module.device
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        with eval_mode(pl_module):
            factors = pl_module(self.fixed_images.to(device=device, dtype=dtype))
        return factors.detach()

    # ------------------------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.fixed_images is not None or not trainer.is_global_zero:
            return
        try:
            self._set_fixed(self._find_val_batch(trainer))
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            self._warn("reading the fixed validation batch", exc)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not trainer.is_global_zero or self.log_images_every_n_steps <= 0:
            return
        step = int(trainer.global_step)
        first = self._last_image_step is None
        if step == self._last_image_step or not (first or step % self.log_images_every_n_steps == 0):
            return
        if self.fixed_images is None:
            if not self._set_fixed(batch):
                return
            self._fixed_from_train = True
            warnings.warn("ImageLogger: no validation data found; showing the first training batch instead.",
                          RuntimeWarning, stacklevel=2)
        self._last_image_step = step
        try:
            self.log_images(trainer, pl_module, step)
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            self._warn(f"logging images at step {step}", exc)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.sanity_checking or not trainer.is_global_zero or self.video_every_n_epochs <= 0
                or self.fixed_images is None):
            return
        epoch = int(trainer.current_epoch)
        if (epoch + 1) % self.video_every_n_epochs != 0:
            return
        try:
            self.log_videos(trainer, pl_module, epoch)
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            self._warn(f"writing turntable videos at epoch {epoch}", exc)

    # ---------------------------------------------------------------------------------- logging
    # Both run under inference mode: no graph, and the eager kernels of a one-off pass (unsup3d.fused).
    @torch.inference_mode()
    def log_images(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> dict[str, Path]:
        """Write and log the factor panels and the first image's mesh of the fixed batch. Returns name -> path
        (the panels' PNGs and ``mesh`` -> ``mesh.glb``)."""
        factors = self._run_model(pl_module)
        panels = {k: v.cpu() for k, v in factor_panels(pl_module, factors, max_items=self.max_items).items()}
        folder = self._dir(trainer) / "images" / f"step_{step}"
        paths = {}
        for name, grid in panels.items():
            paths[name] = atomic_save_image(folder / f"{name}.png", to_uint8(grid))
        mesh = None
        try:
            mesh = paths["mesh"] = self.write_mesh(pl_module, factors, folder / "mesh.glb")
        except Exception as exc:  # noqa: BLE001 - logging must never stop training
            self._warn("writing the mesh", exc)
        for logger in trainer.loggers:
            try:
                self._send_images(logger, panels, step, mesh)
            except Exception as exc:  # noqa: BLE001 - logging must never stop training
                self._warn(f"sending images to {type(logger).__name__}", exc)
        return paths

    @staticmethod
    def write_mesh(pl_module: pl.LightningModule, factors, path: Path, index: int = 0) -> Path:
        """Write item ``index`` of ``factors`` as the textured GLB ``unsup3d-export`` writes (``mesh.glb``:
        the canonical depth's grid mesh through the model's camera, in the export frame, with the shaded
        canonical image as its texture).

        Args:
            pl_module: the model (its renderer lifts the depth).
            factors: :class:`~unsup3d.factors.Factors` of a batch (``canon_depth`` ``B x H x W``,
                ``canon_image`` ``B x 3 x H x W`` in ``[-1, 1]``).
            path: the ``.glb`` file (written atomically).
            index: the item.
        """
        depth = factors.canon_depth[index : index + 1].detach().float()  # 1 x H x W
        h, w = depth.shape[-2:]
        with torch.no_grad():
            vertices = grid_vertices(pl_module.core.renderer, depth, center=True)[0].cpu().numpy()
        texture = to_uint8(factors.canon_image[index].detach().float().clamp(-1, 1) / 2 + 0.5)  # H x W x 3
        return write_glb(path, vertices, grid_faces(h, w), grid_uvs(h, w), texture)

    @torch.inference_mode()
    def log_videos(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict[str, Path]:
        """Write and log the turntable videos of the fixed batch. Returns kind -> video path."""
        factors = self._run_model(pl_module)
        renderer = pl_module.core.renderer
        depth = factors.canon_depth
        textures = {
            "textured": (factors.canon_image / 2 + 0.5).clamp(0, 1),
            "shape": normal_shaded(renderer, depth),
        }
        folder = self._dir(trainer) / "videos"
        paths = {}
        for kind, texture in textures.items():
            frames = turntable_frames(renderer, texture, depth, num_frames=self.num_frames,
                                      image_size=self.video_size, background=1.0)
            grids = frames_to_grids(frames.float().cpu(), pad_value=1.0)  # T x 3 x H' x W'
            paths[kind] = write_video(folder / f"epoch_{epoch}_{kind}.{self.video_format}", grids, fps=self.fps)
        for logger in trainer.loggers:
            try:
                self._send_videos(logger, paths, int(trainer.global_step))
            except Exception as exc:  # noqa: BLE001 - logging must never stop training
                self._warn(f"sending videos to {type(logger).__name__}", exc)
        return paths

    @staticmethod
    def _send_images(logger: Any, panels: dict[str, torch.Tensor], step: int, mesh: Path | None = None) -> None:
        if isinstance(logger, WandbLogger):
            images = {}
            for name, grid in panels.items():
                arr = to_uint8(grid)
                images[f"images/{name}"] = wandb.Image(arr[..., 0] if arr.shape[-1] == 1 else arr)
            if mesh is not None:
                images["images/mesh"] = wandb.Object3D(str(mesh))
            logger.log_metrics(images, step=step)
        elif isinstance(logger, TensorBoardLogger):
            for name, grid in panels.items():
                logger.experiment.add_image(f"images/{name}", grid.clamp(0, 1), global_step=step)

    @staticmethod
    def _send_videos(logger: Any, paths: dict[str, Path], step: int) -> None:
        if isinstance(logger, WandbLogger):
            videos = {f"videos/{kind}": wandb.Video(str(p), format=p.suffix.lstrip(".")) for kind, p in paths.items()}
            logger.log_metrics(videos, step=step)


class DepthBaselineRatios(pl.Callback):
    """Validation SIDE and MAD as ratios to the average-depth baseline: a learning curve in W&B.

    On data with ground-truth depth (batches with a ``"depth"`` entry), the first validation run
    (sanity check included) computes the average-ground-truth-depth map once, over exactly the
    validation batches the trainer evaluates (``limit_val_batches`` respected; under DDP the average
    map is reduced over all ranks), and hands it to the model's validation evaluator
    (:class:`~unsup3d.evaluator.DepthEvaluator`, the code every evaluation uses), which scores it beside the
    model in every validation pass (``val/avg_gt_side``, ``val/avg_gt_mad_original``...). After every
    validation epoch it logs ``val/side_ratio`` (model SIDE / baseline SIDE) and ``val/mad_ratio`` (MAD with
    the original's normal operator, as in the paper's table), and once the baseline's own
    ``val/baseline_side`` and ``val/baseline_mad``. Without ground-truth depth it does nothing.
    """

    def __init__(self) -> None:
        self.average: torch.Tensor | None = None
        self._computed = False
        self._logged_baseline = False

    @torch.no_grad()
    def _average_depth(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.Tensor | None:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            return None
        limit = trainer.num_val_batches
        limit = limit[0] if isinstance(limit, (list, tuple)) else limit
        depths = []
        for i, batch in enumerate(loader):
            if i >= limit:
                break
            if not isinstance(batch, dict) or "depth" not in batch:
                return None
            depths.append(batch["depth"].float())
        if not depths:
            return None
        total = torch.stack([d.sum(0) for d in depths]).sum(0).to(pl_module.device)
        count = torch.tensor(float(sum(len(d) for d in depths)), device=pl_module.device)
        total = trainer.strategy.reduce(total, reduce_op="sum")
        count = trainer.strategy.reduce(count, reduce_op="sum")
        return (total / count).cpu()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._computed:
            self._computed = True
            self.average = self._average_depth(trainer, pl_module)
            evaluator = getattr(pl_module, "val_evaluator", None)
            if self.average is not None and evaluator is not None:
                evaluator.set_average_depth(self.average)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.average is None or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        keys = ("val/side", "val/mad_original", "val/avg_gt_side", "val/avg_gt_mad_original")
        if any(k not in metrics for k in keys):
            return
        base_side, base_mad = float(metrics["val/avg_gt_side"]), float(metrics["val/avg_gt_mad_original"])
        out = {"val/side_ratio": float(metrics["val/side"]) / base_side,
               "val/mad_ratio": float(metrics["val/mad_original"]) / base_mad}
        if not self._logged_baseline:
            out.update({"val/baseline_side": base_side, "val/baseline_mad": base_mad})
            self._logged_baseline = True
        for key, value in out.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(out, step=trainer.global_step)


class SpeedCheck(pl.Callback):
    """Warn when training runs far slower than expected (a busy machine, or too many threads).

    After ``check_at_step`` optimizer steps it takes the median duration of the steps since ``start_step``
    (the first steps pay for warm-up; a median, so that a one-off stall such as compiling the kernels again
    when the thread tuner changes the thread count does not count, while a competing process slows every
    step) and, when that exceeds ``factor * expected_step_seconds``, warns once (rank 0) with the measured and
    expected figures and what usually causes it.

    Args:
        expected_step_seconds: seconds per step this run should take on an idle machine.
        factor: how many times slower counts as far slower.
        start_step, check_at_step: the measured window.
    """

    def __init__(self, expected_step_seconds: float, factor: float = 3.0, start_step: int = 5,
                 check_at_step: int = 30) -> None:
        if not expected_step_seconds > 0 or not factor > 1 or not 0 <= start_step < check_at_step:
            raise ValueError("SpeedCheck needs expected_step_seconds > 0, factor > 1 and "
                             "0 <= start_step < check_at_step")
        self.expected, self.factor = float(expected_step_seconds), float(factor)
        self.start_step, self.check_at_step = int(start_step), int(check_at_step)
        self._last: float | None = None
        self._times: list[float] = []
        self.measured: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if self.measured is not None or step < self.start_step:
            return
        now = time.perf_counter()
        if self._last is not None:
            self._times.append(now - self._last)
        self._last = now
        if step >= self.check_at_step and self._times:
            self.measured = statistics.median(self._times)
            if self.measured > self.factor * self.expected and trainer.is_global_zero:
                warnings.warn(
                    f"training runs at {self.measured:.2f} s per step, {self.measured / self.expected:.1f}x slower "
                    f"than the {self.expected:.2f} s expected on an idle machine: other processes are probably "
                    "competing for the CPU (the step budget is kept, so the result is the same, only later). "
                    "Stop them, or set fewer threads (OMP_NUM_THREADS=1) when the machine is shared.",
                    RuntimeWarning, stacklevel=2)
