"""Evaluate a checkpoint against ground-truth depth, with baselines, in one run.

    python scripts/eval.py checkpoint=outputs/synthetic_cpu/checkpoints/last.ckpt dataset=synthetic

Writes scores.json, scores.txt (mean ± std of SIDE, MAD, masked MAE/MSE for the model and the
baselines, and the model/baseline ratios) and per_image.csv into `output_dir`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from unsup3d.checkpoint import CheckpointError
    from unsup3d.evaluation import run_evaluation

    try:
        run_evaluation(cfg)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
