"""The batch runner of an export: the output folder checked, the photos prepared and run through the
model in batches, each result folder written atomically, every outcome recorded.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from unsup3d.core import core_of
from unsup3d.data.crops import FaceNotFoundError, model_batch, prepare_input
from unsup3d.files.atomic import atomic_dir, is_disk_full
from unsup3d.files.images import ImageLoadError
from unsup3d.inference import eval_mode

from .inputs import InputError, assign_output_names
from .item import FactorArrays, export_factors
from .options import ExportOptions
from .summary import ExportSummary, ImageResult

__all__ = ["OutputDirError", "check_output_dir", "export_images"]


class OutputDirError(OSError):
    """The output folder cannot be created or written."""


def check_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder if needed and check that files can be created in it.

    Raises:
        OutputDirError: it is a file, cannot be created, or is not writable (message names it).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputDirError(errno.ENOTDIR, f"output path {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(exc.errno, f"cannot create output folder {str(path)!r}: "
                                        f"{exc.strerror or exc}") from exc
    try:
        fd, tmp = tempfile.mkstemp(prefix=".unsup3d-write-test-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputDirError(exc.errno, f"output folder {str(path)!r} is not writable: "
                                        f"{exc.strerror or exc}") from exc
    return path


def _error_message(exc: BaseException) -> str:
    if isinstance(exc, (ImageLoadError, FaceNotFoundError, InputError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot write outputs: {exc}"
    return f"{type(exc).__name__}: {exc}"


def export_images(
    model,
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    checkpoint: str | None = None,
    input_errors: Sequence[tuple[str, str]] = (),
    logger=None,
) -> ExportSummary:
    """Export every image: load, run the model in batches, write each result folder atomically.

    Per image the folder ``out_dir/<name>`` (:func:`assign_output_names`) is built in a temporary
    sibling and renamed into place when complete, so an interrupted run leaves no half folder. An
    existing folder is skipped unless ``options.overwrite``. A failing image (unreadable, no face,
    write error) is recorded and the others continue, except on a full disk: the export stops there
    (the remaining images are recorded as failed; the folders written before are complete).

    Args:
        model: an :class:`~unsup3d.core.Unsup3DCore` or the training module holding one (run in eval mode on its current device; its mode is
            given back at the end).
        paths: image files (see :func:`collect_inputs`).
        out_dir: output folder (created).
        options: :class:`ExportOptions` (defaults when None).
        checkpoint: recorded in ``params.json``.
        input_errors: ``(argument, message)`` of inputs that could not be expanded, reported as failed.
        logger: optional callable ``logger(name, folder, params)`` called after each successful image.

    Returns:
        :class:`ExportSummary` in input order (input errors first).
    """
    options = options or ExportOptions()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary([ImageResult(arg, "failed", msg) for arg, msg in input_errors])
    paths = [Path(p) for p in paths]
    names = assign_output_names(paths)
    core = core_of(model)
    size = core.image_size
    device = next(core.parameters()).device
    mode = eval_mode(model)  # given back as it was at the end
    bar = _progress(len(paths), options.progress)

    def note(result: ImageResult) -> None:
        summary.results.append(result)
        if result.status != "ok":
            bar.write(f"{result.status}: {result.input}: {result.message}", file=sys.stderr)
        bar.update(1)

    try:
        for s in range(0, len(paths), options.batch_size):
            items = []
            for path, name in zip(paths[s:s + options.batch_size], names[s:s + options.batch_size]):
                target = out_dir / name
                if target.exists() and not options.overwrite:
                    note(ImageResult(str(path), "skipped", f"output folder {str(target)!r} exists "
                                                           "(use --overwrite to replace it)", str(target)))
                    continue
                try:
                    items.append((path, target, prepare_input(path, size, options.detect_face, options.background)))
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
                    note(ImageResult(str(path), "failed", _error_message(exc)))
            if not items:
                continue
            batch = model_batch([it[2].image for it in items], device)  # B x 3 x S x S in [0, 1]
            try:
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                            enabled=options.precision == "bf16"):
                    factors = core(batch, reconstruct=False)  # the canonical factors are all it writes
                arrays = FactorArrays(factors, model, options)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail this batch only
                for path, _, _ in items:
                    note(ImageResult(str(path), "failed", f"model failed on this batch: {_error_message(exc)}"))
                continue
            for i, (path, target, prep) in enumerate(items):
                info = {"input": prep.record(path, target.name), "checkpoint": checkpoint}
                try:
                    # files inside are written without per-file fsyncs, and none for the folder either:
                    # it appears whole or not at all, and fsyncs would cost more than the model pass
                    with atomic_dir(target, overwrite=options.overwrite, durable=False) as tmp:
                        params = export_factors(factors, i, tmp, options, model, info, batch=arrays)
                except FileExistsError as exc:
                    note(ImageResult(str(path), "skipped", f"{exc.strerror or exc} (use --overwrite)", str(target)))
                    continue
                except Exception as exc:  # noqa: BLE001
                    note(ImageResult(str(path), "failed", _error_message(exc)))
                    if is_disk_full(exc):  # every further image would fail the same way
                        rest = [p for p, _, _ in items[i + 1:]] + paths[s + options.batch_size:]
                        for other in rest:
                            note(ImageResult(str(other), "failed", "not exported: the export stopped on a full disk"))
                        return summary
                    continue
                if logger is not None:
                    try:
                        logger(target.name, target, params)
                    except Exception as exc:  # noqa: BLE001 - logging must not lose exported results
                        bar.write(f"warning: W&B logging failed for {path}: {exc}", file=sys.stderr)
                note(ImageResult(str(path), "ok", "", str(target)))
    finally:
        mode.restore()
        bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _progress(total: int, enabled: bool):
    return tqdm(total=total, unit="img", desc="export", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
