"""Evaluate a checkpoint against ground-truth depth, with baselines, in one run.

    python scripts/eval.py checkpoint=outputs/synthetic_cpu/checkpoints/last.ckpt dataset=synthetic

The `unsup3d-eval` command from a checkout (see `python scripts/eval.py --help` and unsup3d/cli.py):
writes scores.json, scores.txt (mean ± std of SIDE, MAD, masked MAE/MSE for the model and the
baselines, and the model/baseline ratios) and per_image.csv into the run directory (Hydra's:
`hydra.run.dir=DIR`, default outputs/eval/<dataset>).
"""

from __future__ import annotations

from unsup3d.cli import eval_command

if __name__ == "__main__":
    eval_command()
