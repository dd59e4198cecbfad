"""Running a trained model: the device it runs on (:func:`resolve_device`).

Loading one from a checkpoint is :func:`unsup3d.checkpoint.load_model`'s (in eval mode).
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU raises ValueError.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but CUDA is not available (use --device auto or cpu)")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda)") from exc
