"""State shared across calls and threads is safe: the cached grid faces cannot be changed through what
callers get, the atomic writers leave the process umask alone, and each thread detects faces with a
detector of its own."""

from __future__ import annotations

import os
import threading

import numpy as np
import torch

from unsup3d.data import crops
from unsup3d.data.crops import detect_face_box
from unsup3d.files.atomic import atomic_dir, atomic_save_text
from unsup3d.files.mesh import grid_faces as mesh_grid_faces
from unsup3d.renderer import grid_faces


def test_grid_faces_cannot_be_changed_through_what_callers_get():
    expected = grid_faces(4, 5).clone()
    faces = grid_faces(4, 5)
    faces[0] = torch.tensor([7, 7, 7])  # an in-place edit of the returned tensor
    faces.add_(1)
    assert torch.equal(grid_faces(4, 5), expected)
    array = mesh_grid_faces(4, 5)  # the mesh writers' numpy faces
    array[:] = 0
    assert torch.equal(grid_faces(4, 5), expected)
    assert np.array_equal(mesh_grid_faces(4, 5), expected.numpy())


def test_atomic_writers_leave_the_process_umask_alone(tmp_path, monkeypatch):
    """os.umask sets the mask of the whole process: another thread creating a file meanwhile (the demo
    reconstructs in threads) would get mode 0o666 / 0o777."""
    mask = os.umask(0o022)
    os.umask(mask)
    plain = tmp_path / "plain"
    plain.mkdir()
    expected = plain.stat().st_mode & 0o777  # what a plain mkdir gives under this umask

    def changed(*args):
        raise AssertionError("the process umask was changed")

    monkeypatch.setattr(os, "umask", changed)
    with atomic_dir(tmp_path / "result") as tmp:
        atomic_save_text(tmp / "a.txt", "a", durable=False)
    atomic_save_text(tmp_path / "b.txt", "b")
    assert (tmp_path / "result" / "a.txt").read_text() == "a"
    assert (tmp_path / "result").stat().st_mode & 0o777 == expected


def test_each_thread_detects_faces_with_a_detector_of_its_own(monkeypatch):
    """OpenCV's CascadeClassifier is not safe to share between threads (the demo runs reconstructions
    side by side): every detector must be used by one thread only."""
    made = []  # every detector made (kept alive, so none is mistaken for another)

    class Detector:
        def __init__(self, path):
            self.threads = set()
            made.append(self)

        def empty(self):
            return False

        def detectMultiScale(self, gray, **kwargs):  # noqa: N802 - OpenCV's name
            self.threads.add(threading.get_ident())
            return ()

    monkeypatch.setattr(crops.cv2, "CascadeClassifier", Detector)
    image = np.zeros((64, 64, 3), np.uint8)
    together = threading.Barrier(2)
    results = []

    def detect():
        together.wait(timeout=60)  # both threads detect while the other is alive
        results.append([detect_face_box(image) for _ in range(3)])
        together.wait(timeout=60)

    threads = [threading.Thread(target=detect) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [[None] * 3] * 2
    used = [d.threads for d in made if d.threads]
    assert len(used) == 2 and all(len(threads_of) == 1 for threads_of in used), used
