"""Running a trained model: the device it runs on (:func:`resolve_device`) and eval mode for a while
(:class:`eval_mode`: every place that runs a model it did not load, the evaluation, the image logger
and the export, puts it in eval mode this one way and gives it back as it was).

Loading one from a checkpoint is :func:`unsup3d.checkpoint.load_model`'s (in eval mode).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["eval_mode", "resolve_device"]


class eval_mode:  # noqa: N801 - a context manager named like torch.no_grad
    """``model`` and every submodule in eval mode from here on, each given back the mode it had by
    :meth:`restore` or at the end of a ``with`` block (a submodule kept in eval mode while the model
    trains, as the frozen VGG, stays so).

    Args:
        model: any module.

    Example:
        >>> net = nn.Sequential(nn.Dropout(), nn.Linear(2, 2))
        >>> net[1].eval()  # doctest: +ELLIPSIS
        Linear(...)
        >>> with eval_mode(net):
        ...     net.training, net[0].training
        (False, False)
        >>> net.training, net[0].training, net[1].training
        (True, True, False)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modes = [(m, m.training) for m in model.modules()]
        model.eval()

    def restore(self) -> None:
        """Give every submodule back the mode it had when this was made."""
        for m, training in self._modes:
            m.training = training

    def __enter__(self) -> nn.Module:
        return self.model

    def __exit__(self, *exc_info) -> None:
        self.restore()


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
