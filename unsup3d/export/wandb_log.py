"""Logging an export to Weights & Biases: each exported folder's maps, mesh and videos as one step."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import wandb

from unsup3d.files.images import load_image
from unsup3d.tracking import wandb_mode

from .summary import ExportSummary

__all__ = ["ExportWandbLogger"]


class ExportWandbLogger:
    """Log each exported folder to a W&B run: the maps as images, ``mesh.glb`` as a 3D object, videos
    (not a Lightning logger: the training's W&B logger is :func:`unsup3d.training.loggers.wandb_logger`).

    Online or offline as a training run's W&B logger decides (:func:`unsup3d.tracking.wandb_mode`: an
    explicit ``WANDB_MODE`` wins, then online when an API key is configured). Its files go
    to ``$WANDB_DIR`` if set, else to ``dir`` (the export folder), passed explicitly because wandb keeps
    process-wide settings from an earlier run.
    """

    def __init__(self, project: str = "unsup3d-export", name: str | None = None, config: dict | None = None,
                 dir: str | os.PathLike | None = None):
        self.wandb = wandb
        mode = wandb_mode("auto")
        run_dir = os.environ.get("WANDB_DIR") or (str(dir) if dir is not None else None)
        self.run = wandb.init(project=project, name=name, mode=mode, config=config or {}, job_type="export",
                              dir=run_dir)
        self.step = 0

    def __call__(self, name: str, folder: Path, params: dict[str, Any]) -> None:
        wb = self.wandb
        folder = Path(folder)
        data: dict[str, Any] = {}
        for key in ("input", "canonical_image", "albedo", "shading", "normal", "depth"):
            p = folder / f"{key}.png"
            if p.is_file():
                data[f"export/{key}"] = wb.Image(load_image(p), caption=name)  # 16-bit depth shown in 8 bits
        if (folder / "mesh.glb").is_file():
            data["export/mesh"] = wb.Object3D(str(folder / "mesh.glb"), caption=name)
        for p in sorted(folder.glob("*.mp4")) + sorted(folder.glob("*.gif")):
            data[f"export/{p.stem}"] = wb.Video(str(p), caption=name, format=p.suffix[1:])
        data["export/ambient"] = params["light"]["ambient"]
        data["export/diffuse"] = params["light"]["diffuse"]
        data["export/yaw_deg"] = params["view"]["ry_deg"]
        self.run.log(data, step=self.step)
        self.step += 1

    def finish(self, summary: ExportSummary | None = None) -> None:
        if summary is not None:
            self.run.summary.update({"ok": len(summary.ok), "failed": len(summary.failed),
                                     "skipped": len(summary.skipped)})
        self.run.finish()
