"""Train Unsup3D: `python scripts/train.py experiment=synthetic_cpu [key=value ...]`.

Any config key can be overridden on the command line (see conf/); multi-GPU and multi-node runs
pass `trainer.devices=N trainer.strategy=ddp trainer.num_nodes=M`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from unsup3d.training import ConfigError, train

    try:
        train(cfg)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
