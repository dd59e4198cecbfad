"""Tests of unsup3d.vgg: torchvision's VGG16 layout without torchvision, and where its weights are found."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from unsup3d import vgg as vgg_module
from unsup3d.vgg import VGG16_WEIGHTS_ENV, VGG16Features, load_vgg16_features

VGG_KEYS = [f"{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias")]


def test_vgg16_features_layout() -> None:
    vgg = VGG16Features()
    assert list(vgg.state_dict()) == VGG_KEYS
    assert len(vgg) == 16 and isinstance(vgg[15], nn.ReLU)
    assert isinstance(vgg[4], nn.MaxPool2d) and isinstance(vgg[9], nn.MaxPool2d)
    assert vgg[14].weight.shape == (256, 256, 3, 3)
    assert not any(p.requires_grad for p in vgg.parameters())
    assert not vgg.training
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    with torch.no_grad():
        assert vgg(torch.randn(2, 3, 32, 32)).shape == (2, 256, 8, 8)
    with pytest.raises(ValueError):
        vgg(torch.randn(2, 1, 32, 32))


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No env var, an empty hub cache in tmp_path, and a download that fails (no network)."""
    monkeypatch.delenv(VGG16_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls: list[str] = []

    def fail(url: str, *args, **kwargs):
        calls.append(url)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    return calls


def _fake_torchvision_vgg16(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    feats = VGG16Features()
    for p in feats.parameters():
        p.data.normal_()
    full = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    # layers past relu3_3 and the classifier, as in the full torchvision file
    full["features.17.weight"] = torch.zeros(512, 256, 3, 3)
    full["features.17.bias"] = torch.zeros(512)
    full["classifier.0.weight"] = torch.zeros(8, 4)
    return full


def test_missing_weights_error_says_how_to_fix(no_weights: list[str]) -> None:
    with pytest.raises(RuntimeError) as info:
        load_vgg16_features()
    msg = str(info.value)
    assert VGG16_WEIGHTS_ENV in msg
    assert str(vgg_module.hub_cache_path()) in msg and "hub" in msg
    assert "vgg16-397923af.pth" in msg and "weights_path" in msg
    assert "lam_perc=0" in msg
    assert no_weights == [vgg_module.VGG16_URL]  # the download was attempted (and mocked)


def test_allow_random_warns(no_weights: list[str]) -> None:
    with pytest.warns(RuntimeWarning, match="random"):
        vgg = load_vgg16_features(allow_random=True)
    assert isinstance(vgg, VGG16Features) and not vgg.training
    with pytest.warns(RuntimeWarning):
        load_vgg16_features(allow_random=True, download=False)
    assert len(no_weights) == 1  # download=False skips it


def test_load_from_explicit_path(no_weights: list[str], tmp_path: Path) -> None:
    full = _fake_torchvision_vgg16()
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(full, path)
    vgg = load_vgg16_features(path)
    for key, value in vgg.state_dict().items():
        torch.testing.assert_close(value, full[f"features.{key}"])
    assert not any(p.requires_grad for p in vgg.parameters()) and not vgg.training
    assert no_weights == []
    # a features-only dict works too
    only = tmp_path / "features.pth"
    torch.save({k.removeprefix("features."): v for k, v in full.items() if k.startswith("features.")}, only)
    torch.testing.assert_close(load_vgg16_features(only)[14].weight, full["features.14.weight"])


def test_load_from_env_and_hub_cache(no_weights: list[str], tmp_path: Path, monkeypatch) -> None:
    full = _fake_torchvision_vgg16(seed=2)
    env_file = tmp_path / "env_vgg.pth"
    torch.save(full, env_file)
    monkeypatch.setenv(VGG16_WEIGHTS_ENV, str(env_file))
    torch.testing.assert_close(load_vgg16_features()[0].weight, full["features.0.weight"])

    monkeypatch.delenv(VGG16_WEIGHTS_ENV)
    cached = vgg_module.hub_cache_path()
    assert cached == tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    torch.save(full, cached)
    torch.testing.assert_close(load_vgg16_features()[7].bias, full["features.7.bias"])
    assert no_weights == []


def test_download_path_is_used(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(VGG16_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    full = _fake_torchvision_vgg16(seed=3)
    seen: dict[str, object] = {}

    def fake_download(url: str, **kwargs):
        seen.update(kwargs, url=url)
        return full

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    vgg = load_vgg16_features()
    torch.testing.assert_close(vgg[12].weight, full["features.12.weight"])
    assert seen["url"] == vgg_module.VGG16_URL and seen["weights_only"] is True


def test_bad_files_raise(no_weights: list[str], tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError):
        load_vgg16_features(tmp_path / "nope.pth")
    monkeypatch.setenv(VGG16_WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match=VGG16_WEIGHTS_ENV):
        load_vgg16_features()
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(RuntimeError, match="missing"):
        load_vgg16_features(bad)
