"""Experiment tracking: Weights & Biases online when an API key is configured, offline otherwise.

:func:`wandb_mode` is the one rule for every W&B run of the package (training and export).
"""

from __future__ import annotations

import netrc
import os

__all__ = ["wandb_mode"]


def wandb_mode(requested: str = "auto") -> str:
    """Resolve ``auto`` to ``online`` when a W&B API key is configured, else ``offline``.

    An explicit ``WANDB_MODE`` (``online``, ``offline``, ``disabled``; ``dryrun`` means offline) wins;
    a key is ``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc`` (``wandb login``).
    """
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled", "dryrun"):
        return "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        auth = netrc.netrc(os.path.expanduser("~/.netrc")).authenticators("api.wandb.ai")
        if auth and auth[2]:
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"
