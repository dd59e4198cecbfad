"""ImageLogger tests: a tiny CPU fit writes PNG panels and turntable videos, with CSV and offline W&B."""

import warnings

import imageio.v3 as iio
import pytest
import pytorch_lightning as pl
import torch
import trimesh
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from unsup3d.files.mesh import grid_vertices
from unsup3d.model import Unsup3D
from unsup3d.training.callbacks import ImageLogger

S = 32


class RandomImages(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, S, S, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i]}


class RandomData(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(RandomImages(4, 0), batch_size=2)

    def val_dataloader(self):
        return DataLoader(RandomImages(3, 1), batch_size=3)


def _trainer(tmp_path, logger, callback):
    return pl.Trainer(
        max_steps=2, limit_val_batches=1, logger=logger, callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, accelerator="cpu",
        devices=1, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )


def _model():
    torch.manual_seed(0)
    return Unsup3D(image_size=S, width=0.125, lam_perc=0)


def test_image_logger_csv(tmp_path):
    cb = ImageLogger(log_images_every_n_steps=1, max_items=2, num_frames=3)
    model = _model()
    _trainer(tmp_path, CSVLogger(tmp_path), cb).fit(model, datamodule=RandomData())
    # the fixed batch is the first validation batch, cut to max_items, kept on the callback only
    assert cb.fixed_images is not None and cb.fixed_images.shape == (2, 3, S, S)
    assert torch.equal(cb.fixed_images, RandomImages(3, 1).images[:2])
    assert not any(torch.equal(v, cb.fixed_images) for v in vars(model).values() if torch.is_tensor(v))
    for step in (1, 2):
        folder = tmp_path / "images" / f"step_{step}"
        names = {p.stem for p in folder.glob("*.png")}
        assert {"input_symline", "canon_depth", "recon_image", "conf_map_l1"} <= names
        img = iio.imread(folder / "canon_image.png")
        assert img.shape == (S + 4, 2 * S + 6, 3)
    # the first fixed image's textured mesh, as unsup3d-export writes it (canonical grid, export frame)
    mesh = trimesh.load(tmp_path / "images" / "step_2" / "mesh.glb", force="mesh", process=False, maintain_order=True)
    model.eval()
    with torch.no_grad():
        depth = model(cb.fixed_images[:1]).canon_depth
    expected = grid_vertices(model.core.renderer, depth, center=True)[0].numpy()
    assert mesh.vertices.shape == (S * S, 3) and len(mesh.faces) == 2 * (S - 1) ** 2
    assert abs(mesh.vertices - expected).max() < 1e-5
    assert mesh.visual.material.baseColorTexture.size == (S, S)
    model.train()
    for kind in ("textured", "shape"):
        video = tmp_path / "videos" / f"epoch_0_{kind}.mp4"
        assert video.exists(), kind
        frames = iio.imread(video, plugin="FFMPEG")
        assert frames.shape[0] == 3
    assert model.training  # train mode restored


def test_image_logger_dataloaders_and_failure_warns(tmp_path, monkeypatch):
    """Dataloaders passed to fit(); a broken video writer warns instead of stopping the run."""
    from unsup3d.training import callbacks

    def broken(*args, **kwargs):
        raise RuntimeError("ffmpeg missing")

    monkeypatch.setattr(callbacks, "write_video", broken)
    cb = ImageLogger(log_images_every_n_steps=2, max_items=4, num_frames=1)
    val = DataLoader(RandomImages(2, 3), batch_size=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, False, cb).fit(_model(), DataLoader(RandomImages(4, 0), batch_size=2), val)
    assert torch.equal(cb.fixed_images, RandomImages(2, 3).images)
    assert (tmp_path / "images" / "step_1" / "recon_depth.png").exists()  # the first step is always shown
    assert (tmp_path / "images" / "step_2" / "recon_depth.png").exists()
    assert any("ffmpeg missing" in str(w.message) for w in caught)


def test_image_logger_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="unsup3d-test")
    cb = ImageLogger(log_images_every_n_steps=1, max_items=2, num_frames=2)
    try:
        _trainer(tmp_path, logger, cb).fit(_model(), datamodule=RandomData())
        run_dir = logger.experiment.dir
    finally:
        import wandb

        wandb.finish()
    media = list((tmp_path / "wandb").rglob("media/**/*"))
    names = [p.name for p in media if p.is_file()]
    assert any(n.endswith(".png") for n in names), names
    assert any(n.endswith(".mp4") for n in names), names
    assert any(n.endswith(".glb") for n in names), names  # the reconstruction as a wandb.Object3D
    assert run_dir is not None
    assert (tmp_path / "images" / "step_1" / "input_symline.png").exists()


def test_speed_check_warns_only_when_far_slower():
    import types
    import warnings as _w

    from unsup3d.training.callbacks import SpeedCheck

    def run(expected, step_seconds, check_at_step=3):
        """Steps 1, 2, ... taking ``step_seconds`` each (a number: four steps; a list: one per step)."""
        durations = [step_seconds] * 4 if isinstance(step_seconds, (int, float)) else step_seconds
        cb = SpeedCheck(expected_step_seconds=expected, factor=3.0, start_step=1, check_at_step=check_at_step)
        trainer = types.SimpleNamespace(global_step=0, is_global_zero=True)
        clock = [0.0]
        import unsup3d.training.callbacks as cbm

        real = cbm.time.perf_counter
        cbm.time.perf_counter = lambda: clock[0]
        try:
            with _w.catch_warnings(record=True) as caught:
                _w.simplefilter("always")
                for step, seconds in enumerate(durations, start=1):
                    trainer.global_step = step
                    clock[0] += seconds
                    cb.on_train_batch_end(trainer, None, None, None, step)
        finally:
            cbm.time.perf_counter = real
        return cb, [str(w.message) for w in caught]

    cb, msgs = run(0.5, 0.6)
    assert cb.measured == pytest.approx(0.6) and not msgs
    cb, msgs = run(0.5, 2.0)
    assert len(msgs) == 1 and "4.0x slower" in msgs[0] and "2.00 s per step" in msgs[0]
    # one stall in the window (kernels compiled again after a thread-count change) is not a slow machine
    cb, msgs = run(0.5, [0.5, 0.5, 60.0, 0.5, 0.5, 0.5, 0.5], check_at_step=6)
    assert cb.measured == pytest.approx(0.5) and not msgs
    with pytest.raises(ValueError):
        SpeedCheck(expected_step_seconds=0)
