"""Named pretrained models (`unsup3d.pretrained`): downloaded once from a local HTTP server on 127.0.0.1
that serves archives laid out as the original release's ``pretrained_<name>.zip`` (random weights of a
narrow model under the original checkpoint's key names), then loaded from the cache without the network.
Truncated transfers, a server that goes away and a bad archive leave nothing in the cache."""

from __future__ import annotations

import http.server
import io
import json
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unsup3d
from unsup3d.checkpoint import CheckpointError
from unsup3d.data.download import DOWNLOAD_URL_ENV, resource_url
from unsup3d.export import main as export_main
from unsup3d.model import Unsup3D
from unsup3d.pretrained import (
    CACHE_DIR_ENV,
    PretrainedModelError,
    cache_dir,
    pretrained_checkpoint,
    resolve_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
KEYS = REPO.parent / "shared" / "reference" / "original_checkpoint_keys.json"
BIN = Path(sys.executable).parent
WIDTH = 0.125  # the release's key names at 1/8 of its channels: 2 MB instead of 150 MB


def release_archive(name: str, seed: int = 0) -> tuple[bytes, dict[str, dict[str, torch.Tensor]]]:
    """``pretrained_<name>.zip`` as the original release lays it out (``pretrained_<name>/checkpoint030.pth``
    holding ``{"netD": state_dict, ...}``; syncar without netC), with random weights. Returns the archive's
    bytes and the state dicts."""
    torch.manual_seed(seed)
    model = Unsup3D(width=WIDTH, lam_perc=0.0, use_conf_map=name != "syncar")
    for p in model.parameters():
        p.data.normal_(0.0, 0.05)
    state = {net: {k: v.clone() for k, v in sd.items()} for net, sd in model.core.original_state_dicts().items()}
    if KEYS.is_file():  # the original checkpoint's key names, network by network
        reference = json.loads(KEYS.read_text())
        for net, sd in state.items():
            assert set(sd) == set(reference[net]), net
    buf = io.BytesIO()
    torch.save(state, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"pretrained_{name}/", b"")
        zf.writestr(f"pretrained_{name}/checkpoint030.pth", buf.getvalue())
    return out.getvalue(), state


class _Release(http.server.BaseHTTPRequestHandler):
    """``GET /<mode>/<file>``: ``ok`` sends the file; ``short`` announces its length and sends half, then
    closes; ``cut`` sends half without a length, then closes (the server going away mid-transfer)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.requests.append(self.path)
        mode, _, name = self.path.lstrip("/").partition("/")
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        if mode != "cut":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if mode == "ok" else data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local release server: ``(url, files, requests, stop)``; ``stop()`` makes it go away."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Release)
    srv.files, srv.requests = {}, []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            srv.shutdown()
            srv.server_close()
            stopped.append(True)

    yield f"http://127.0.0.1:{srv.server_address[1]}", srv.files, srv.requests, stop
    stop()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder


def _cache_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_folder_and_download_base_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "unsup3d"
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(DOWNLOAD_URL_ENV, raising=False)
    assert resource_url("pretrained_cat") == "https://www.robots.ox.ac.uk/~vgg/research/unsup3d/data/pretrained_cat.zip"
    monkeypatch.setenv(DOWNLOAD_URL_ENV, "http://mirror.example/unsup3d/")
    assert resource_url("pretrained_cat") == "http://mirror.example/unsup3d/pretrained_cat.zip"
    assert resource_url("synface") == "http://mirror.example/unsup3d/synface.zip"  # datasets too


@pytest.mark.parametrize("name", ["celeba", "syncar"])
def test_downloaded_once_verified_then_loaded_from_the_cache_offline(name, server, cache, monkeypatch):
    url, files, requests, stop = server
    files[f"pretrained_{name}.zip"], state = release_archive(name)
    monkeypatch.setenv(DOWNLOAD_URL_ENV, f"{url}/ok")
    model = unsup3d.load_pretrained(name)
    assert isinstance(model, Unsup3D) and not model.training
    assert (model.core.netC is None) == (name == "syncar")
    for net, sd in state.items():
        for key, value in getattr(model.core, net).state_dict().items():
            assert torch.equal(value, sd[key]), f"{net}.{key}"
    assert requests == [f"/ok/pretrained_{name}.zip"]
    assert _cache_entries(cache) == [f"pretrained_{name}"]  # no archive, no temporary folder
    assert _cache_entries(cache / f"pretrained_{name}") == ["checkpoint030.pth"]
    stop()  # no server any more: the cached file is used without the network
    again = unsup3d.load_pretrained(name)
    assert torch.equal(again.core.netD.state_dict()["network.0.weight"], state["netD"]["network.0.weight"])
    assert pretrained_checkpoint(name) == cache / f"pretrained_{name}" / "checkpoint030.pth"
    assert len(requests) == 1


@pytest.mark.parametrize("mode", ["short", "cut", "gone"])
def test_a_failed_download_leaves_nothing_and_says_what_to_do(mode, server, cache, monkeypatch):
    """A transfer cut short (with and without a Content-Length) and a server that has gone away: one clear
    error naming the file to fetch and where to put it; nothing usable-looking in the cache."""
    url, files, requests, stop = server
    files["pretrained_celeba.zip"], _ = release_archive("celeba")
    monkeypatch.setenv(DOWNLOAD_URL_ENV, f"{url}/{'ok' if mode == 'gone' else mode}")
    if mode == "gone":
        stop()
    with pytest.raises(PretrainedModelError) as info:
        unsup3d.load_pretrained("celeba")
    msg = str(info.value)
    expected = {"short": "truncated", "cut": "truncated download", "gone": "could not download"}[mode]
    assert expected in msg, msg
    assert f"{url}/{'ok' if mode == 'gone' else mode}/pretrained_celeba.zip" in msg
    assert str(cache / "pretrained_celeba" / "checkpoint030.pth") in msg and "UNSUP3D_CACHE_DIR" in msg
    assert not (cache / "pretrained_celeba").exists()
    assert _cache_entries(cache) == []  # no .part file, no temporary folder
    # the same through a command: exit status 2 and the message
    code = export_main(["--checkpoint", "celeba", "--output", str(cache.parent / "out"), str(REPO / "README.md")])
    assert code == 2 and not (cache / "pretrained_celeba").exists()


def test_an_archive_without_a_readable_checkpoint_is_refused(server, cache, monkeypatch):
    url, files, _, _ = server
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("pretrained_cat/checkpoint030.pth", b"<html>moved</html>" * 100_000)
    files["pretrained_cat.zip"] = out.getvalue()
    monkeypatch.setenv(DOWNLOAD_URL_ENV, f"{url}/ok")
    with pytest.raises(PretrainedModelError, match="checkpoint cannot be read"):
        pretrained_checkpoint("cat")
    assert _cache_entries(cache) == []


def test_a_cache_folder_without_its_checkpoint_is_downloaded_again(server, cache, monkeypatch):
    url, files, requests, _ = server
    files["pretrained_cat.zip"], _ = release_archive("cat")
    (cache / "pretrained_cat").mkdir(parents=True)
    (cache / "pretrained_cat" / "notes.txt").write_text("emptied by hand")
    monkeypatch.setenv(DOWNLOAD_URL_ENV, f"{url}/ok")
    assert pretrained_checkpoint("cat").is_file()
    assert _cache_entries(cache / "pretrained_cat") == ["checkpoint030.pth"] and len(requests) == 1


def test_names_files_and_unknown_checkpoints(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: 'nope\.ckpt'.*celeba, synface, cat, syncar"):
        resolve_checkpoint("nope.ckpt")
    with pytest.raises(PretrainedModelError, match="unknown pretrained model 'dog'"):
        unsup3d.load_pretrained("dog")
    with pytest.raises(PretrainedModelError, match="not in the cache"):
        pretrained_checkpoint("celeba", download=False)
    (tmp_path / "celeba").write_bytes(b"x")  # a file of that name wins over the pretrained model
    assert resolve_checkpoint("celeba") == Path("celeba")


def _photo(path: Path) -> Path:
    i, j = np.meshgrid(np.arange(80), np.arange(96), indexing="ij")
    Image.fromarray(np.stack([i * 3, j * 2, (i + j) % 256], -1).astype(np.uint8)).save(path)
    return path


def test_export_demo_and_eval_take_a_model_name(server, cache, tmp_path, monkeypatch, capsys):
    url, files, requests, _ = server
    files["pretrained_synface.zip"], _ = release_archive("synface")
    monkeypatch.setenv(DOWNLOAD_URL_ENV, f"{url}/ok")
    cached = cache / "pretrained_synface" / "checkpoint030.pth"

    code = export_main(["--checkpoint", "synface", "--output", str(tmp_path / "out"), str(_photo(tmp_path / "a.png")),
                        "--formats", "glb", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    params = json.loads((tmp_path / "out" / "a" / "params.json").read_text())
    assert params["checkpoint"] == str(cached.resolve()) and len(requests) == 1

    pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
    from unsup3d.demo import app
    from unsup3d.demo.cli import main as demo_main

    served = {}
    monkeypatch.setattr(app, "build_app", lambda model, work_dir, **kw: served.update(model=model, **kw) or "page")
    monkeypatch.setattr(app, "launch", lambda demo, work_dir, **kw: served.update(page=demo))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert demo_main(["--checkpoint", "synface", "--port", "7999"]) == 0
    finally:  # the command installs its own SIGTERM / SIGINT handlers
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert served["page"] == "page" and served["checkpoint"] == str(cached.resolve())
    assert isinstance(served["model"], Unsup3D) and len(requests) == 1

    from unsup3d.data.synthetic import SyntheticConfig, generate_dataset

    generate_dataset(tmp_path / "data", 2, 2, 3, 0, SyntheticConfig(image_size=64, supersample=1))
    eval_cmd = BIN / "unsup3d-eval"
    if not eval_cmd.exists():
        pytest.skip("unsup3d-eval is not installed beside the interpreter")
    proc = subprocess.run([str(eval_cmd), "checkpoint=synface", "dataset=synthetic",
                           f"dataset.root={tmp_path / 'data'}", "dataset.num_workers=0", "dataset.batch_size=4",
                           f"hydra.run.dir={tmp_path / 'eval'}", "device=cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert scores["checkpoint"] == str(cached) and scores["num_images"] == 3
    assert len(requests) == 1  # the eval process read the cache
