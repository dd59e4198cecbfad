"""Atomic writing helpers (files, images, videos): success paths, no half files, existing files survive failures."""

from __future__ import annotations

import errno
import json
import os
import stat

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from unsup3d.files.atomic import (
    atomic_dir,
    atomic_save_bytes,
    atomic_save_json,
    atomic_save_npy,
    atomic_torch_save,
    atomic_write,
)
from unsup3d.files.images import atomic_save_image
from unsup3d.files.video import write_video


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_atomic_write_creates_file_and_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    with atomic_write(target) as fh:
        fh.write(b"hello")
    assert target.read_bytes() == b"hello"
    assert _leftovers(target.parent) == []
    mode = target.stat().st_mode & 0o777
    assert mode & 0o600 == 0o600  # not the 0600-only mode of mkstemp unless umask asks for it


def test_atomic_write_text_mode(tmp_path):
    target = tmp_path / "t.txt"
    with atomic_write(target, "w") as fh:
        fh.write("héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"


def test_exception_keeps_existing_file_and_removes_temp(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as fh:
        fh.write(b"new partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []


def test_exception_leaves_no_new_file(tmp_path):
    target = tmp_path / "new.bin"
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as fh:
        fh.write(b"x")
        raise KeyboardInterrupt
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_json_serialisation_failure_leaves_old_file(tmp_path):
    target = tmp_path / "meta.json"
    atomic_save_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_save_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_unwritable_folder_message_names_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="ro"):
            atomic_save_bytes(folder / "x.bin", b"1")
    finally:
        folder.chmod(0o700)


def test_parent_is_a_file_message_names_folder(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    with pytest.raises(OSError, match="blocker"):
        atomic_save_bytes(blocker / "x.bin", b"1")


def test_target_is_a_folder(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError, match="existing folder"):
        atomic_save_bytes(tmp_path / "dir", b"1")


def test_save_image_variants(tmp_path):
    rgb = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)
    atomic_save_image(tmp_path / "rgb.png", rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)

    gray = rgb[..., 0]
    atomic_save_image(tmp_path / "gray.png", gray)
    with Image.open(tmp_path / "gray.png") as im:
        assert im.mode == "L"

    g16 = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    atomic_save_image(tmp_path / "g16.png", g16)
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
        assert np.array_equal(np.asarray(im).astype(np.int64), g16.astype(np.int64))

    chw = np.full((3, 8, 9), 0.5, dtype=np.float32)
    atomic_save_image(tmp_path / "f.jpg", chw, quality=95)
    with Image.open(tmp_path / "f.jpg") as im:
        assert im.size == (9, 8) and im.format == "JPEG"

    atomic_save_image(tmp_path / "noext", rgb, format="png")
    with Image.open(tmp_path / "noext") as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="format"):
        atomic_save_image(tmp_path / "noext2", rgb)


def test_save_npy_and_torch(tmp_path):
    import torch

    arr = np.random.default_rng(0).random((4, 5)).astype(np.float32)
    atomic_save_npy(tmp_path / "a.npy", arr)
    assert np.array_equal(np.load(tmp_path / "a.npy"), arr)

    state = {"w": torch.arange(6.0).view(2, 3), "step": 7}
    atomic_torch_save(state, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt")
    assert loaded["step"] == 7 and torch.equal(loaded["w"], state["w"])
    assert _leftovers(tmp_path) == []


def test_atomic_dir_success_and_failure(tmp_path):
    target = tmp_path / "out" / "img001"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"

    with pytest.raises(FileExistsError, match="img001"), atomic_dir(target):
        pass

    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert _leftovers(target.parent) == []

    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert _leftovers(target.parent) == []


def _count_fsyncs(monkeypatch):
    import unsup3d.files.atomic as io_mod

    calls = []
    real = io_mod.os.fsync

    def counting(fd):
        st = os.fstat(fd)
        calls.append((stat.S_ISREG(st.st_mode), st.st_size))  # (a file?, its size)
        return real(fd)

    monkeypatch.setattr(io_mod.os, "fsync", counting)
    return calls


def test_durable_false_skips_fsync_but_stays_atomic(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    atomic_save_bytes(tmp_path / "a.bin", b"1")
    assert len(calls) == 2  # the file, then its folder
    calls.clear()
    atomic_save_bytes(tmp_path / "b.bin", b"2", durable=False)
    atomic_save_image(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8), durable=False)
    atomic_save_json(tmp_path / "d.json", {"a": 1}, durable=False)
    atomic_save_npy(tmp_path / "e.npy", np.arange(3), durable=False)
    assert calls == []
    assert (tmp_path / "b.bin").read_bytes() == b"2" and json.loads((tmp_path / "d.json").read_text()) == {"a": 1}
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "b.bin", durable=False) as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert (tmp_path / "b.bin").read_bytes() == b"2"
    assert _leftovers(tmp_path) == []


def test_atomic_dir_durable_fsyncs_each_file_once(tmp_path, monkeypatch):
    calls = _count_fsyncs(monkeypatch)
    target = tmp_path / "out" / "img"
    with atomic_dir(target) as tmp:
        atomic_save_bytes(tmp / "a.bin", b"a", durable=False)
        atomic_save_bytes(tmp / "sub" / "b.bin", b"b", durable=False)
        assert calls == []
    assert (target / "a.bin").read_bytes() == b"a" and (target / "sub" / "b.bin").read_bytes() == b"b"
    assert sorted(c for c in calls if c[0]) == [(True, 1), (True, 1)]  # each file once, then folders
    assert len(calls) > 2
    calls.clear()
    with atomic_dir(tmp_path / "out" / "fast", durable=False) as tmp:
        atomic_save_bytes(tmp / "a.bin", b"a", durable=False)
    assert calls == [] and (tmp_path / "out" / "fast" / "a.bin").read_bytes() == b"a"
    assert _leftovers(tmp_path / "out") == []


def test_permission_error_message_names_folder_simulated(tmp_path, monkeypatch):
    """Also runs as root (where chmod cannot make a folder unwritable)."""
    import errno

    real_open = os.open

    def deny(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:  # creating the temporary file
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(PermissionError, match=f"cannot write to folder.*{tmp_path.name}"):
        atomic_save_bytes(tmp_path / "x.bin", b"1")


def test_write_video_mp4_and_gif(tmp_path):
    frames = torch.rand(7, 3, 33, 35)  # odd sizes get padded to even for H.264
    mp4 = write_video(tmp_path / "sub" / "v.mp4", frames, fps=5)
    assert mp4.exists()
    back = iio.imread(mp4, plugin="FFMPEG")
    assert back.shape[0] == 7 and back.shape[1:] == (34, 36, 3)
    u8 = (np.random.rand(4, 16, 20, 3) * 255).astype(np.uint8)
    gif = write_video(tmp_path / "v.gif", u8, fps=4)
    back = iio.imread(gif, index=None)
    assert back.shape[0] == 4 and back.shape[1:3] == (16, 20)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    with pytest.raises(ValueError, match="extension"):
        write_video(tmp_path / "v.avi", u8)


def test_write_video_without_ffmpeg(tmp_path, monkeypatch):
    import imageio_ffmpeg

    def missing():
        raise RuntimeError("No ffmpeg exe could be found")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        write_video(tmp_path / "v.mp4", torch.rand(2, 3, 8, 8))
    assert not (tmp_path / "v.mp4").exists()


class DiskFullAfter:
    """A binary file whose writes fail with ENOSPC once ``limit`` bytes are written while ``armed``."""

    armed = True

    def __init__(self, fh, limit: int = 0):
        self._fh, self._left = fh, limit

    def write(self, data) -> int:
        if DiskFullAfter.armed:
            self._left -= len(data)
            if self._left < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def fill_disk(monkeypatch, limit: int = 0, armed: bool = True) -> None:
    """Every file the atomic writers open becomes a :class:`DiskFullAfter` (toggle ``DiskFullAfter.armed``)."""
    import unsup3d.files.atomic as io_mod

    real_fdopen = os.fdopen
    monkeypatch.setattr(io_mod.os, "fdopen", lambda *a, **k: DiskFullAfter(real_fdopen(*a, **k), limit))
    monkeypatch.setattr(DiskFullAfter, "armed", armed)


def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError; atomic_torch_save raises the OSError itself."""
    from unsup3d.files.atomic import is_disk_full

    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)
    fill_disk(monkeypatch, limit=100)
    with pytest.raises(OSError, match=r"cannot write '.*last\.ckpt': No space left on device .*is full") as info:
        atomic_torch_save({"step": 2, "w": torch.zeros(1000)}, target)
    assert is_disk_full(info.value)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1
    assert _leftovers(tmp_path) == []


def test_remove_stale_temp_files_only_removes_temporary_files(tmp_path):
    from unsup3d.files.atomic import remove_stale_temp_files

    (tmp_path / ".last.ckpt.tmp-abc123").write_bytes(b"half a checkpoint")
    (tmp_path / "last.ckpt").write_bytes(b"a checkpoint")
    (tmp_path / "notes.tmp-1").write_text("not hidden: not ours")
    (tmp_path / ".img.tmp-xyz").mkdir()  # a folder being built by atomic_dir is left alone
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == [".last.ckpt.tmp-abc123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".img.tmp-xyz", "last.ckpt", "notes.tmp-1"]
    assert remove_stale_temp_files(tmp_path / "missing") == []
