"""Atomic file and folder writing: bytes, text, JSON, arrays, torch objects (checkpoints), folders.

Every output of the package goes through these helpers (images through :mod:`unsup3d.files.images`,
videos through :mod:`unsup3d.files.video`, meshes through :mod:`unsup3d.files.mesh`, all on top of them) so
that an interrupted run never leaves a half-written file behind and never destroys an existing one:
data is written to a hidden temporary file in the target's folder (``.name.tmp-XXXX``), flushed and
fsynced, then moved onto the target with :func:`os.replace` (atomic on POSIX and Windows when both are
on the same file system, which a sibling always is). On any exception the temporary file is removed
and the target is left untouched.

Durability: by default (``durable=True``) every file is fsynced before the rename and its folder after
it, so a completed write also survives a power cut. Files written inside a folder that
:func:`atomic_dir` is building can pass ``durable=False``: they still go through a temporary file and a
rename (never half-written), but skip the per-file fsyncs - the folder appears as a whole, and
``atomic_dir(durable=True)`` fsyncs all its files once, just before renaming it into place.

Folders that cannot be written raise :class:`PermissionError` (or another :class:`OSError`) whose
message names the folder. A full disk (or quota) while writing raises an :class:`OSError` with errno
``ENOSPC`` / ``EDQUOT`` whose message names the file and says that the disk is full
(:func:`is_disk_full` recognises it); the temporary file is removed and an existing target is unchanged.
A process killed outright (``kill -9``) can leave a temporary file behind, never a half-written target;
:func:`remove_stale_temp_files` clears them.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "DISK_FULL_ERRNOS",
    "as_numpy",
    "atomic_dir",
    "atomic_save_bytes",
    "atomic_save_json",
    "atomic_save_npy",
    "atomic_save_text",
    "atomic_torch_save",
    "atomic_write",
    "is_disk_full",
    "remove_stale_temp_files",
]

#: errno values of a full disk or an exhausted quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Infix of the temporary siblings the writers create: ``.<name>.tmp-XXXX``.
_TEMP_INFIX = ".tmp-"


def _prepare_parent(path: Path) -> Path:
    """Create the parent folder of ``path`` if needed; raise a clear error naming it otherwise."""
    parent = path.parent
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write file {str(path)!r}: it is an existing folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot create output folder {str(parent)!r}: {exc.strerror}") from exc
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"output folder {str(parent)!r} is not a folder")
    return parent


_TEMP_COUNTER = itertools.count()


def _mkstemp(parent: Path, name: str) -> tuple[int, str]:
    """Create a new temporary sibling ``.<name>.tmp-<pid>-<n>`` with a plain ``open()``'s permissions
    (``0o666`` minus the umask; no chmod needed) and return ``(fd, path)``. A process-wide counter and the
    pid make names unique without the random-name retries of ``tempfile.mkstemp``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(1000):
        tmp = os.path.join(parent, f".{name}{_TEMP_INFIX}{os.getpid()}-{next(_TEMP_COUNTER)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # left by an earlier process with the same pid
            continue
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write to folder {str(parent)!r}: {exc.strerror}") from exc
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file in {str(parent)!r}")


def _mkdtemp(parent: Path, name: str) -> Path:
    """Create a new temporary sibling folder ``.<name>.tmp-<pid>-<n>`` with a plain ``mkdir``'s permissions:
    ``0o777`` minus the umask, applied by the operating system. (Reading the umask would mean setting it:
    ``os.umask`` changes it for the whole process, and so for any thread creating files meanwhile.)"""
    for _ in range(1000):
        tmp = parent / f".{name}{_TEMP_INFIX}{os.getpid()}-{next(_TEMP_COUNTER)}"
        try:
            os.mkdir(tmp, 0o777)
            return tmp
        except FileExistsError:  # left by an earlier process with the same pid
            continue
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary folder in {str(parent)!r}")


def _fsync_dir(folder: Path) -> None:
    """Best-effort fsync of a folder so a rename survives a crash (no-op where unsupported)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then (best effort) every folder, deepest first."""
    flags = os.O_RDONLY if os.name == "posix" else os.O_RDWR  # Windows' fsync needs a writable handle
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an :class:`OSError` of a full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def _disk_full_error(exc: OSError, path: Path) -> OSError:
    """``exc`` (a full disk) as an :class:`OSError` of the same errno whose message names ``path``."""
    return OSError(exc.errno, f"cannot write {str(path)!r}: {exc.strerror or exc} (the disk or quota of "
                              f"{str(path.parent)!r} is full); nothing was written and an existing file "
                              "of that name is unchanged")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp-XXXX``) that writes interrupted by a killed process
    left in ``folder`` (not in its sub-folders). Only call it when no other process writes there.

    Returns:
        The removed paths (none when the folder does not exist).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if path.name.startswith(".") and _TEMP_INFIX in path.name and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", encoding: str | None = None, *, durable: bool = True
) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; move it onto ``path`` on success.

    Missing parent folders are created. The file gets the permissions a plain ``open()`` would give.

    Args:
        path: target file.
        mode: ``"wb"`` (default) or ``"w"`` (text; ``encoding`` defaults to UTF-8). Only write modes.
        encoding: text encoding for ``"w"``.
        durable: fsync the file before the rename and its folder after it. Pass False for files inside
            a folder being built by :func:`atomic_dir` (which makes the folder durable as a whole); the
            write stays atomic (temporary file + rename) either way.

    Yields:
        The open temporary file object. Write to it; do not close it.

    Raises:
        PermissionError / OSError: the folder cannot be created or written (the message names it).
        OSError: the disk is full (errno ``ENOSPC`` / ``EDQUOT``; the message names the file).
        Any other exception raised in the ``with`` body propagates after the temporary file is removed;
        the target (if it existed) is unchanged.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    parent = _prepare_parent(path)
    fd, tmp = _mkstemp(parent, path.name)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_disk_full(exc):
            raise _disk_full_error(exc, path) from exc
        raise
    if durable:
        _fsync_dir(parent)


def atomic_save_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (``durable``: see :func:`atomic_write`). Returns the path."""
    with atomic_write(path, "wb", durable=durable) as fh:
        fh.write(data)
    return Path(path)


def atomic_save_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (``durable``: see :func:`atomic_write`). Returns the path."""
    return atomic_save_bytes(path, text.encode("utf-8"), durable=durable)


def as_numpy(x: Any) -> np.ndarray:
    """An array-like as numpy: tensors are detached and moved to the CPU (half precision as float32, which
    numpy holds for bfloat16 too); anything else through ``numpy.asarray``.

    Example:
        >>> as_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype
        dtype('float32')
    """
    if torch.is_tensor(x):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):  # bfloat16 has no numpy dtype
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def atomic_save_npy(path: str | os.PathLike, array: Any, *, durable: bool = True) -> Path:
    """Save an array in ``.npy`` format atomically (no pickling; ``durable``: see :func:`atomic_write`).

    Returns the path.
    """
    with atomic_write(path, "wb", durable=durable) as fh:
        np.save(fh, as_numpy(array), allow_pickle=False)
    return Path(path)


def atomic_save_json(
    path: str | os.PathLike, obj: Any, indent: int = 2, *, durable: bool = True, **dump_kwargs
) -> Path:
    """Save ``obj`` as UTF-8 JSON (with a final newline) atomically. Returns the path.

    The object is serialised before the file is opened, so a non-serialisable object leaves no file.
    ``durable``: see :func:`atomic_write`.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False, **dump_kwargs) + "\n"
    return atomic_save_text(path, text, durable=durable)


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, durable: bool = True) -> Path:
    """``torch.save(obj, path)`` atomically (for checkpoints; ``durable``: see :func:`atomic_write`).

    Returns the path.

    Raises:
        OSError: the file could not be written (e.g. a full disk: errno ``ENOSPC``, the message naming
            the file), rather than the ``RuntimeError`` torch's writer turns it into.
    """
    with atomic_write(path, "wb", durable=durable) as fh:
        sink = _RecordingWriter(fh)
        try:
            torch.save(obj, sink)
        except RuntimeError as exc:
            if sink.error is not None:
                raise sink.error from exc
            raise
    return Path(path)


class _RecordingWriter:
    """A binary file's ``write`` and ``flush`` that remember the :class:`OSError` they raised (torch's
    zip writer reports a failed write as a ``RuntimeError`` without it)."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self.error = exc
            raise


def _rmtree_quiet(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False, *, durable: bool = True) -> Iterator[Path]:
    """Build a whole folder in a temporary sibling, then rename it onto ``target``.

    Write every file of the folder under the yielded path: plain writes are fine there, and so are the
    ``atomic_*`` helpers with ``durable=False`` (no per-file fsync). On success the temporary folder
    becomes ``target``; on an exception it is deleted and ``target`` is untouched.

    Args:
        target: final folder.
        overwrite: when ``target`` already exists, replace it (the old folder is moved aside and deleted
            only once the new one is in place). When False, an existing ``target`` raises
            :class:`FileExistsError` - checked both before and after the body runs.
        durable: fsync every file and folder of the new folder once, just before the rename, and the
            parent folder after it, so the completed folder also survives a power cut. With False
            nothing is fsynced: the folder still appears whole or not at all to other processes and
            after an interruption, but an OS crash soon after may lose its contents.

    Yields:
        Path of the (empty) temporary folder ``.name.tmp-XXXX`` next to ``target``, made with the
        permissions a plain ``mkdir`` gives (the folder keeps them).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(errno.EEXIST, f"output folder {str(target)!r} already exists")
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"output path {str(target)!r} exists and is not a folder")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = _mkdtemp(parent, target.name)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write to folder {str(parent)!r}: {exc.strerror}") from exc
    try:
        yield tmp
        if durable:
            _fsync_tree(tmp)
        _move_into_place(tmp, target, overwrite)
    except BaseException:
        _rmtree_quiet(tmp)
        raise
    if durable:
        _fsync_dir(parent)


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename ``tmp`` onto ``target``; an existing ``target`` is moved aside first (restored on failure)."""
    if not target.exists():
        os.rename(tmp, target)
        return
    if not overwrite:
        raise FileExistsError(errno.EEXIST, f"output folder {str(target)!r} already exists")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    _rmtree_quiet(old)
