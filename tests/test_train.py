"""Training entry point: config composition and validation, fast_dev_run of every experiment,
resume, W&B offline, DDP on CPU, the installed commands and Hydra's run directory, evaluation on a
tiny trained model."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unsup3d.config import ConfigError, compose_config
from unsup3d.data.synthetic import SyntheticConfig, generate_dataset
from unsup3d.training import build_loggers, train, validate_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the installed commands sit beside the interpreter
EXPERIMENTS = ["celeba", "synface", "cat", "syncar", "synthetic_cpu"]
TINY = ["model.width=0.125", "model.lam_perc=0", "dataset.image_size=32", "dataset.batch_size=4",
        "dataset.num_workers=0", "dataset.crop=null", "callbacks.progress_bar=null",
        "callbacks.image_logger=null"]
# A short run: no time limit, one validation batch, no sanity check.
SHORT = ["trainer.max_time=null", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"]


def compose_cfg(overrides, config_name="train"):
    return compose_config(config_name, overrides)


def command(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable}")
    return str(path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Tiny synthetic dataset with depth, and an image-only copy (for the datasets without depth)."""
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root / "synthetic", 24, 8, 8, 0, SyntheticConfig(image_size=32))
    plain = root / "plain"
    for split in ("train", "val", "test"):
        shutil.copytree(root / "synthetic" / split / "image", plain / split)
    return root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    validate_config(cfg)
    assert cfg.name == experiment
    assert cfg.model.image_size == cfg.dataset.image_size == 64
    for key in ("root", "image_size", "batch_size", "num_workers"):
        assert key in cfg.dataset


def test_original_recipes():
    cat = compose_cfg(["experiment=cat"])
    assert cat.model.z_translation_range == 0.1 and cat.model.lam_flip_start_epoch == 10
    car = compose_cfg(["experiment=syncar"])
    assert car.model.use_conf_map is False and car.model.lam_perc == 0.01 and car.model.lam_depth_sm == 0.1
    assert list(car.model.diff_light_range) == [0.5, 1.0] and car.model.border_depth == 1.08
    celeba = compose_cfg(["experiment=celeba"])
    assert celeba.model.lr == 1e-4 and celeba.model.weight_decay == 5e-4 and celeba.dataset.batch_size == 64


@pytest.mark.parametrize("override, message", [
    ("+model.lambda_flip=0.5", "unknown key 'model.lambda_flip'"),
    ("model.lr=fast", "bad value for 'model.lr'"),
    ("+trainer.max_epoch=3", "unknown key 'trainer.max_epoch'"),
    ("+dataset.batchsize=3", "unknown key 'dataset.batchsize'"),
    ("+logger.wandb.projekt=x", "unknown key 'logger.wandb.projekt'"),
    ("+callbacks.image_logger.max_item=3", "unknown key 'callbacks.image_logger.max_item'"),
    ("callbacks.image_logger.max_items=many", "bad value for 'callbacks.image_logger.max_items'"),
    ("callbacks.progress_bar=none", "bad value for 'callbacks.progress_bar'"),
    ("model._target_=unsup3d.model.Nope", "model._target_"),
    ("dataset.batch_size=0", "dataset.batch_size"),
    ("model.use_flip=maybe", "bad value for 'model.use_flip'"),
])
def test_bad_config_fails_naming_the_key(override, message, tmp_path):
    cfg = compose_cfg(["experiment=synthetic_cpu", override, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(cfg)


def test_bad_model_value_fails_at_start(synth, tmp_path):
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}",
                       f"paths.output_dir={tmp_path / 'run'}", "logger=none", "model.on_nonfinite=ignore"])
    with pytest.raises(ConfigError, match="on_nonfinite"):
        train(cfg)


def test_bad_logger_value_fails_when_built(tmp_path):
    cfg = compose_cfg(["experiment=synthetic_cpu", "logger.wandb.mode=sometimes", f"paths.output_dir={tmp_path}"])
    validate_config(cfg)
    with pytest.raises(ConfigError, match="'logger.wandb'.*mode"):
        build_loggers(cfg)


def test_composed_config_needs_a_run_directory():
    """Outside a Hydra app there is no Hydra run directory: a composed config must set paths.output_dir."""
    cfg = compose_cfg(["experiment=synthetic_cpu"])
    with pytest.raises(ConfigError, match="paths.output_dir"):
        train(cfg)


def test_the_run_directory_drives_every_output_path(tmp_path):
    cfg = compose_cfg(["experiment=synthetic_cpu", "logger=csv", f"paths.output_dir={tmp_path / 'x'}"])
    validate_config(cfg)
    out = str(tmp_path / "x")
    assert cfg.callbacks.model_checkpoint.dirpath == f"{out}/checkpoints"
    assert cfg.logger.csv.save_dir == out and cfg.trainer.default_root_dir == out


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_every_experiment(experiment, synth, tmp_path):
    root = synth / ("synthetic" if experiment in ("synface", "synthetic_cpu") else "plain")
    cfg = compose_cfg([f"experiment={experiment}", *TINY, f"dataset.root={root}", "trainer.fast_dev_run=true",
                       "trainer.accelerator=cpu", f"paths.output_dir={tmp_path / 'run'}", "logger=none"])
    summary = train(cfg)
    assert summary["global_step"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["metrics"].values())


def test_resume_continues_step_count(synth, tmp_path):
    base = ["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}", "logger=csv",
            f"paths.output_dir={tmp_path / 'run'}", *SHORT]
    first = train(compose_cfg([*base, "trainer.max_steps=3"]))
    assert first["global_step"] == 3
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    second = train(compose_cfg([*base, "trainer.max_steps=5"]))
    assert second["global_step"] == 5
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp*")), "temporary files left behind"


def test_wandb_offline_writes_run_directory(synth, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: offline by default
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}",
                       "logger=wandb", f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=2", *SHORT])
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs, list((tmp_path / "run").rglob("*"))[:20]
    assert (tmp_path / "run" / "wandb_run_id.txt").is_file()


@pytest.mark.parametrize("logger, expected", [("csv", "csv/metrics.csv"), ("tensorboard", "tensorboard"),
                                              ("none", None)])
def test_other_loggers(logger, expected, synth, tmp_path):
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}",
                       f"logger={logger}", f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=1",
                       "trainer.log_every_n_steps=1", *SHORT])
    assert train(cfg)["global_step"] == 1
    if expected:
        assert (tmp_path / "run" / expected).exists()


def test_ddp_two_processes_on_cpu(synth, tmp_path):
    """scripts/train.py with DDP; its earlier output_dir=DIR argument still names the run directory."""
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), "experiment=synthetic_cpu", *TINY,
           f"dataset.root={synth / 'synthetic'}", "logger=csv", f"output_dir={out}",
           "trainer.max_steps=2", *SHORT, "trainer.strategy=ddp", "trainer.devices=2",
           "trainer.accelerator=cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2


def test_train_script_reports_config_errors(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "experiment=synthetic_cpu",
                           "+model.not_a_key=1", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown key 'model.not_a_key'" in proc.stderr


def test_installed_train_command_writes_everything_to_hydra_run_dir(synth, tmp_path):
    """unsup3d-train from a folder without configs: hydra.run.dir=DIR gets the checkpoints, the logs
    (Hydra's and the CSV logger's), the image panels and the videos; nothing lands in ./outputs."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    cmd = [command("unsup3d-train"), "experiment=synthetic_cpu", *TINY, "callbacks.image_logger.max_items=2",
           "callbacks.image_logger.num_frames=2", "callbacks.image_logger.log_images_every_n_steps=1",
           f"dataset.root={synth / 'synthetic'}", "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
           "trainer.log_every_n_steps=1", *SHORT, f"hydra.run.dir={run}"]
    cmd.remove("callbacks.image_logger=null")
    proc = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "csv" / "metrics.csv").is_file() and (run / "train.log").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    assert list((run / "images").glob("step_*/canon_depth.png")) and list((run / "videos").glob("*.mp4"))
    assert list(elsewhere.iterdir()) == []


def test_eval_command_writes_scores(synth, tmp_path):
    summary = train(compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}",
                                 "logger=none", f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=2",
                                 *SHORT]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert summary["last_checkpoint"] == str(ckpt)
    out = tmp_path / "eval"
    proc = subprocess.run([command("unsup3d-eval"), f"checkpoint={ckpt}",
                           "dataset=synthetic", f"dataset.root={synth / 'synthetic'}", "dataset.num_workers=0",
                           "dataset.batch_size=4", f"hydra.run.dir={out}", "save_images=true"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((out / "scores.json").read_text())
    # the synthetic split records its views: the prior at the true view and the pose statistics too
    methods = {"model", "constant", "avg_gt", "prior_at_view", "prior_at_true_view"}
    assert set(scores["scores"]) == methods
    for method in scores["scores"].values():
        assert set(method) == {"side", "mad", "mad_original", "mae", "mse"}
    assert set(scores["ratios"]) == methods - {"model"}
    assert {"pitch_slope", "yaw_slope", "roll_slope", "yaw_corr", "relief_ratio"} <= set(scores["pose"])
    assert "yaw slope" in proc.stdout
    header = (out / "per_image.csv").read_text().splitlines()[0]
    assert header == "path,method,side,mad,mad_original,mae,mse,num_pixels"
    assert len((out / "per_image.csv").read_text().splitlines()) == 1 + 5 * 8
    assert len(list((out / "images").iterdir())) == 8


def test_supervised_depth_trains_netd_on_the_ground_truth(synth, tmp_path):
    """model.supervised_depth: netD learns the ground-truth depth (the loss falls), the view is the identity,
    and the other networks are left as they were."""
    from unsup3d.data import Unsup3DDataModule
    from unsup3d.model import Unsup3D

    root = synth / "synthetic"
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={root}", "logger=csv",
                       "model.supervised_depth=true", "model.lr=2e-3", f"paths.output_dir={tmp_path / 'run'}",
                       "trainer.max_steps=30", "trainer.max_epochs=30", "trainer.precision=32-true", *SHORT])
    torch.manual_seed(0)
    before = Unsup3D(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    model = Unsup3D(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    dm = Unsup3DDataModule(root=str(root), image_size=32, batch_size=8, num_workers=0, has_depth=True,
                           train_flip=False, persistent_workers=False)
    dm.setup("fit")
    batch = next(iter(dm.dataloader("train")))
    with torch.no_grad():
        trained_loss = model.supervised_depth_loss(batch["image"], batch["depth"])
        untrained_loss = before.supervised_depth_loss(batch["image"], batch["depth"])
        f = model.eval()(batch["image"])
    assert trained_loss < 0.7 * untrained_loss
    assert torch.all(f.view == 0)
    model.train().zero_grad()
    model.supervised_depth_loss(batch["image"], batch["depth"]).backward()
    assert all(p.grad is not None for p in model.core.netD.parameters())
    assert all(p.grad is None for n in ("netA", "netL", "netV", "netC") for p in getattr(model.core, n).parameters())
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/loss_depth_supervised" in rows[0]
    bad = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'plain'}", "dataset.has_depth=false",
                       "logger=none", "model.supervised_depth=true", f"paths.output_dir={tmp_path / 'bad'}",
                       "trainer.max_steps=1", *SHORT])
    with pytest.raises(ValueError, match="supervised_depth=true needs ground-truth depth"):
        train(bad)


def test_bf16_mixed_training_step_on_cpu(synth, tmp_path):
    """trainer.precision=bf16-mixed (the GPU config's default) on the CPU: networks in bf16, geometry in
    fp32; the steps run and every logged loss is finite."""
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}", "logger=csv",
                       f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=2", *SHORT,
                       "trainer.precision=bf16-mixed", "trainer.accelerator=cpu", "trainer.log_every_n_steps=1"])
    summary = train(cfg)
    assert summary["global_step"] == 2
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open()))
    losses = [float(r[k]) for r in rows for k in r if k.startswith("train/loss") and r[k] not in ("", None)]
    assert losses and all(math.isfinite(v) for v in losses)


def test_validation_logs_ratios_to_the_average_depth_baseline(synth, tmp_path):
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}", "logger=csv",
                       f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=2", "trainer.max_time=null",
                       "trainer.val_check_interval=1", "trainer.check_val_every_n_epoch=null",
                       "trainer.limit_val_batches=2", "trainer.num_sanity_val_steps=0"])
    summary = train(cfg)
    m = summary["metrics"]
    assert {"val/side_ratio", "val/mad_ratio", "val/side", "val/mad_original"} <= set(m)
    assert m["val/side_ratio"] > 0 and math.isfinite(m["val/side_ratio"])
    # the baseline: the mean ground-truth depth of the validation batches, scored by the same metric
    from unsup3d.data import Unsup3DDataModule
    from unsup3d.metrics import SIDE_SCALE, DepthMetrics

    dm = Unsup3DDataModule(root=str(synth / "synthetic"), image_size=32, batch_size=4, num_workers=0,
                           has_depth=True, persistent_workers=False)
    dm.setup("validate")
    depths = [b["depth"] for i, b in zip(range(2), dm.val_dataloader())]
    avg = torch.cat(depths).mean(0)
    metric = DepthMetrics(fov=10.0, background_depth=1.1)
    for d in depths:
        metric.update(avg.expand_as(d), d)
    base = metric.compute()
    assert m["val/side_ratio"] == pytest.approx(m["val/side"] / (float(base["side"]) * SIDE_SCALE), rel=1e-4)
    assert m["val/mad_ratio"] == pytest.approx(m["val/mad_original"] / float(base["mad_original"]), rel=1e-4)
    rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "val/side_ratio" in rows.splitlines()[0]


def test_learning_curve_evaluates_during_training(synth, tmp_path):
    from unsup3d.data import Unsup3DDataModule
    from unsup3d.data.synthetic import load_split_params
    from unsup3d.evaluation import LearningCurve, average_train_depth

    root = synth / "synthetic"
    dm = Unsup3DDataModule(root=str(root), image_size=32, batch_size=4, num_workers=0, has_depth=True,
                           train_flip=False, persistent_workers=False)
    dm.setup("fit")
    dm.setup("test")
    _, records = load_split_params(root / "test")
    views = {str((root / "test" / r["image"]).resolve()): r["view"] for r in records}
    curve = LearningCurve(dm.test_dataloader(), average_train_depth(dm.dataloader("train")), [1, 2], views)
    cfg = compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={root}", "logger=none",
                       f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=3", "trainer.max_time=null",
                       "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0"])
    train(cfg, extra_callbacks=[curve])
    assert [r["step"] for r in curve.rows] == [1, 2, 3]  # the chosen steps and the end
    for r in curve.rows:
        assert r["side_ratio"] == pytest.approx(r["side"] / r["avg_gt_side"])
        assert {"yaw_slope", "yaw_corr", "relief_ratio", "minutes"} <= set(r)
    assert curve.rows[0]["minutes"] <= curve.rows[-1]["minutes"]


def test_threads_setting(synth, tmp_path):
    with pytest.raises(ConfigError, match="threads"):
        validate_config(compose_cfg(["experiment=synthetic_cpu", "threads=0", f"paths.output_dir={tmp_path}"]))
    before = torch.get_num_threads()
    try:
        train(compose_cfg(["experiment=synthetic_cpu", *TINY, f"dataset.root={synth / 'synthetic'}", "logger=none",
                           f"paths.output_dir={tmp_path / 'run'}", "trainer.max_steps=1", *SHORT, "threads=1"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("flags, expected", [
    ("fpu vme avx512f avx512_bf16 avx512_vnni", "bf16-mixed"),
    ("fpu avx2 amx_bf16 amx_tile", "bf16-mixed"),
    ("fpu vme avx2 avx512f avx512bw", "32-true"),  # AVX-512 without bf16: emulated bf16 is slower
])
def test_native_cpu_precision_follows_the_cpu_flags(flags, expected, tmp_path):
    from unsup3d.config import native_cpu_precision

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert native_cpu_precision(info) == expected
    assert native_cpu_precision(tmp_path / "missing") == "32-true"


def test_synthetic_cpu_trains_in_bf16_where_the_cpu_has_it_and_original_recipes_in_fp32(tmp_path):
    from unsup3d.config import native_cpu_precision

    cfg = compose_cfg(["experiment=synthetic_cpu", f"paths.output_dir={tmp_path}"])
    assert cfg.trainer.precision == native_cpu_precision()
    for name in ("celeba", "synface", "cat", "syncar"):
        assert compose_cfg([f"experiment={name}", f"paths.output_dir={tmp_path}"]).trainer.precision == "32-true"
