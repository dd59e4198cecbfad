"""Nothing lost on resume: a run trained, interrupted and resumed keeps every metric logged before the
interruption in its CSV and TensorBoard logs (read back from the files), and a resumed W&B run is the same
run. The rows an interrupted run logged after its last checkpoint are set aside, not duplicated."""

from __future__ import annotations

import csv
import re
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch

from unsup3d.config import compose_config
from unsup3d.data.synthetic import SyntheticConfig, generate_dataset
from unsup3d.training import train

TINY = ["experiment=synthetic_cpu", "model.width=0.125", "model.lam_perc=0", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0", "callbacks.progress_bar=null",
        "callbacks.image_logger=null", "trainer.max_time=null", "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1"]
LOSS = "train/loss"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate_dataset(root / "synthetic", 24, 4, 4, 0, SyntheticConfig(image_size=32, supersample=1))
    return root / "synthetic"


def _run(data: Path, run: Path, steps: int, *more: str) -> dict:
    cfg = compose_config("train", [*TINY, f"dataset.root={data}", f"paths.output_dir={run}",
                                   f"trainer.max_steps={steps}", *more])
    return train(cfg)


def _csv_steps(path: Path, key: str = LOSS) -> list[int]:
    with open(path, newline="") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh) if r.get(key)]


def _tb_events(folder: Path):
    """Every event of the TensorBoard files under ``folder`` in file order: ``(step, tag or None, purge)``,
    read with tensorboardX's protobuf (TFRecord: length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            purge = event.HasField("session_log") and event.session_log.status == SessionLog.START
            tags = [v.tag for v in event.summary.value] or [None]
            for tag in tags:
                yield int(event.step), tag, purge


def _tb_shown(folder: Path, tag: str = LOSS) -> list[int]:
    """The steps of ``tag`` TensorBoard shows: a purge marker at step s drops the earlier events at s and later."""
    shown: list[tuple[int, str | None]] = []
    for step, name, purge in _tb_events(folder):
        if purge:
            shown = [(s, t) for s, t in shown if s < step]
        elif name is not None:
            shown.append((step, name))
    return [s for s, t in shown if t == tag]


def _steps_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def test_a_resumed_run_keeps_the_metrics_logged_before(data, tmp_path):
    """Train to step 4, resume to 8: every step's loss is in metrics.csv and in TensorBoard, once."""
    run = tmp_path / "run"
    assert _run(data, run, 4, "logger=[csv,tensorboard]")["global_step"] == 4
    first = _csv_steps(run / "csv" / "metrics.csv")
    assert first == [0, 1, 2, 3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _run(data, run, 8, "logger=[csv,tensorboard]")["global_step"] == 8
    assert not [w for w in caught if "will be deleted" in str(w.message)]  # Lightning's CSV warning is gone
    assert _csv_steps(run / "csv" / "metrics.csv") == list(range(8))
    assert not list((run / "csv").glob("metrics.previous-*"))  # nothing was logged twice
    assert _tb_shown(run / "tensorboard") == list(range(8))
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) >= 2


def test_steps_logged_after_the_last_checkpoint_are_set_aside_not_doubled(data, tmp_path):
    """A run killed at step 6 whose newest checkpoint is at step 4 resumes at 4: steps 4 and 5 are logged
    again, so the first ones leave metrics.csv (kept, with the whole file, in metrics.previous-*.csv) and
    TensorBoard hides them; resume=false later moves the whole log aside."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    _run(data, run, 4, "logger=[csv,tensorboard]")
    saved = tmp_path / "step4.ckpt"
    shutil.copy(ckpts / "last.ckpt", saved)
    _run(data, run, 6, "logger=[csv,tensorboard]")
    assert _csv_steps(run / "csv" / "metrics.csv") == list(range(6))
    for p in ckpts.glob("*.ckpt"):  # the kill: what it had saved after step 4 is gone
        p.unlink()
    shutil.copy(saved, ckpts / "last.ckpt")
    assert _steps_of(ckpts / "last.ckpt") == 4

    _run(data, run, 8, "logger=[csv,tensorboard]")
    assert _csv_steps(run / "csv" / "metrics.csv") == list(range(8))
    (aside,) = (run / "csv").glob("metrics.previous-*.csv")
    assert _csv_steps(aside) == list(range(6))  # the interrupted run's file, whole
    assert _tb_shown(run / "tensorboard") == list(range(8))
    purges = [s for s, _, purge in _tb_events(run / "tensorboard") if purge]
    assert purges == [4, 4]  # each resumed start marked its step

    _run(data, run, 2, "logger=[csv,tensorboard]", "resume=false")
    assert _csv_steps(run / "csv" / "metrics.csv") == [0, 1]
    olds = sorted((run / "csv").glob("metrics.previous-*.csv"), key=lambda p: p.stat().st_mtime_ns)
    assert len(olds) == 2 and _csv_steps(olds[-1]) == list(range(8))


def test_a_resumed_wandb_run_is_the_same_run(data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_CONFIG_DIR": str(tmp_path / "config")}.items():
        monkeypatch.setenv(key, value)
    run = tmp_path / "run"
    _run(data, run, 2, "logger=wandb")
    run_id = (run / "wandb_run_id.txt").read_text()
    _run(data, run, 4, "logger=wandb")
    assert (run / "wandb_run_id.txt").read_text() == run_id
    runs = sorted((run / "wandb").glob("offline-run-*"))
    # both segments, one run id (wandb adds "-1" to the second folder's name when both start in the same second)
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", p.name) for p in runs)


def test_two_tensorboard_writers_in_the_same_second_keep_both_files(tmp_path):
    """tensorboardX names an event file after the second it was opened and truncates an existing one: a run
    restarted within that second would have erased the first run's events."""
    from unsup3d.training.loggers import ContinuingTensorBoardLogger

    for step in (0, 1):
        logger = ContinuingTensorBoardLogger(str(tmp_path), name="tb", version="")
        logger.log_metrics({LOSS: float(step)}, step=step)
        logger.finalize("success")
    assert sorted(s for s, tag, _ in _tb_events(tmp_path / "tb") if tag == LOSS) == [0, 1]
