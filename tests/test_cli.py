"""The installed commands and the scripts that wrap them: --help from any folder, legacy arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unsup3d.cli import translate_legacy_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

COMMANDS = {
    "unsup3d-train": "unsup3d-train: train Unsup3D",
    "unsup3d-eval": "unsup3d-eval: evaluate a checkpoint",
    "unsup3d-export": "usage: unsup3d-export",
    "unsup3d-make-synthetic": "usage: unsup3d-make-synthetic",
    "unsup3d-prepare": "usage: unsup3d-prepare",
}
# The training config's groups, as --help lists them.
GROUPS = ("callbacks: default", "dataset: base, cat, celeba, folder", "logger: csv, none, tensorboard, wandb",
          "paths: default", "trainer: cpu, ddp, default, gpu")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_from_any_folder(name, tmp_path):
    exe = BIN / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed beside {sys.executable}")
    proc = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert COMMANDS[name] in proc.stdout
    if name == "unsup3d-train":
        assert all(group in proc.stdout for group in GROUPS), proc.stdout
    assert list(tmp_path.iterdir()) == []  # --help writes nothing


def test_eval_script_help():
    """scripts/eval.py is the unsup3d-eval command (scripts/train.py is run by test_train.py, make_synthetic.py
    by test_synthetic.py and export.py by test_export.py)."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert COMMANDS["unsup3d-eval"] in proc.stdout


def test_legacy_output_dir_becomes_hydra_run_dir(capsys):
    args = ["experiment=celeba", "output_dir=/tmp/run", "dataset.output_dir_like=1", "hydra.run.dir=x"]
    assert translate_legacy_overrides(args) == ["experiment=celeba", "hydra.run.dir=/tmp/run",
                                                "dataset.output_dir_like=1", "hydra.run.dir=x"]
    assert "hydra.run.dir" in capsys.readouterr().err
