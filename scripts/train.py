"""Train Unsup3D: `python scripts/train.py experiment=synthetic_cpu [key=value ...]`.

The `unsup3d-train` command from a checkout (see `python scripts/train.py --help` and unsup3d/cli.py):
any config key can be overridden on the command line (configs in conf/); the run directory is
Hydra's (`hydra.run.dir=DIR`, default outputs/<name>); multi-GPU and multi-node runs pass
`trainer=ddp trainer.devices=N trainer.num_nodes=M`.
"""

from __future__ import annotations

from unsup3d.cli import train_command

if __name__ == "__main__":
    train_command()
