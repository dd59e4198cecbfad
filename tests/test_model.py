"""Model tests: factor shapes, original checkpoint compatibility, flip path, overfitting, guards."""

import json
import math
from pathlib import Path

import pytest
import torch

from unsup3d.checkpoint import CheckpointError, load_model, model_from_checkpoint
from unsup3d.model import Unsup3D, blur_images

KEYS_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "original_checkpoint_keys.json"


def tiny(**kw) -> Unsup3D:
    torch.manual_seed(0)
    args = dict(image_size=32, width=0.125, lam_perc=0.0)
    args.update(kw)
    return Unsup3D(**args)


def test_factor_shapes():
    m = tiny()
    f = m(torch.rand(3, 3, 32, 32))
    b, s = 3, 32
    expected = {
        "input": (b, 3, s, s), "canon_depth_raw": (b, s, s), "canon_depth": (b, s, s),
        "canon_albedo": (b, 3, s, s), "canon_normal": (b, s, s, 3), "canon_diffuse_shading": (b, 1, s, s),
        "canon_shading": (b, 1, s, s), "canon_image": (b, 3, s, s), "light_ambient": (b,),
        "light_diffuse": (b,), "light_direction": (b, 3), "view": (b, 6), "recon_depth": (b, s, s),
        "recon_normal": (b, s, s, 3), "recon_image": (b, 3, s, s), "recon_mask": (b, 1, s, s),
        "canon_depth_flip": (b, s, s), "canon_albedo_flip": (b, 3, s, s), "canon_image_flip": (b, 3, s, s),
        "recon_depth_flip": (b, s, s), "recon_image_flip": (b, 3, s, s),
        "conf_sigma_l1": (b, 2, s, s), "conf_sigma_percl": (b, 2, s // 4, s // 4),
    }
    for name, shape in expected.items():
        assert tuple(getattr(f, name).shape) == shape, name
    hp = m.hparams
    assert f.canon_depth.min() >= hp.min_depth - 1e-6 and f.canon_depth.max() <= hp.max_depth + 1e-6
    assert torch.allclose(f.canon_depth[:, :, :2], torch.tensor(m.core.border_depth))
    assert torch.allclose(f.light_direction.norm(dim=1), torch.ones(b))
    assert torch.all(f.view[:, :3].abs() <= math.radians(60) + 1e-6)
    assert torch.equal(f.canon_depth_flip, f.canon_depth.flip(2))


def test_default_model_is_the_original_configuration():
    if not KEYS_FILE.is_file():
        pytest.skip(f"reference key file not found at {KEYS_FILE}")
    ref = json.loads(KEYS_FILE.read_text())
    m = Unsup3D()
    assert m.hparams.image_size == 64 and m.core.renderer.fov == 10.0
    ours = m.core.original_state_dicts()
    for net, keys in ref.items():
        assert {k: list(v.shape) for k, v in ours[net].items()} == keys, net


def test_original_format_checkpoint_loads_strictly_and_runs(tmp_path):
    if not KEYS_FILE.is_file():
        pytest.skip(f"reference key file not found at {KEYS_FILE}")
    ref = json.loads(KEYS_FILE.read_text())
    g = torch.Generator().manual_seed(0)
    ckpt = {net: {k: torch.randn(*shape, generator=g) * 0.02 for k, shape in keys.items()}
            for net, keys in ref.items()}
    path = tmp_path / "checkpoint030.pth"
    torch.save(ckpt, path)
    model = load_model(path)
    assert torch.equal(model.core.netD.state_dict()["network.0.weight"], ckpt["netD"]["network.0.weight"])
    with torch.no_grad():
        f = model(torch.rand(1, 3, 64, 64))
    assert torch.isfinite(f.recon_image).all()


def test_lightning_style_checkpoint_round_trip(tmp_path):
    m = tiny()
    ckpt = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}
    m2 = model_from_checkpoint(ckpt)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m.eval()(x).recon_image, m2.eval()(x).recon_image)


def test_bad_checkpoints_have_clear_errors(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(text)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.ckpt")
    other = tmp_path / "other.pth"
    torch.save({"foo": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="neither a Lightning checkpoint"):
        load_model(other)


class _Obj:  # a pickled class instance needs full unpickling
    pass


def test_untrusted_pickle_is_refused(tmp_path):
    m = tiny()
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams), "extra": _Obj()}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_model(path)
    assert isinstance(load_model(path, trust=True), Unsup3D)


def test_symmetric_factors_give_identical_flip_reconstruction():
    m = tiny().eval()
    s = 32

    def sym_depth(x):
        g = torch.linspace(-1, 1, s)
        yy, xx = torch.meshgrid(g, g, indexing="ij")
        d = 0.3 * torch.cos(2 * xx) * torch.sin(3 * yy)
        return d.expand(x.shape[0], 1, s, s)

    def sym_albedo(x):
        a = torch.rand(x.shape[0], 3, s, s // 2)
        return torch.cat([a, a.flip(3)], 3) * 2 - 1

    m.core.netD.forward = sym_depth
    m.core.netA.forward = sym_albedo
    with torch.no_grad():
        f = m(torch.rand(2, 3, s, s))
    assert torch.allclose(f.canon_depth, f.canon_depth_flip)
    assert torch.allclose(f.recon_image, f.recon_image_flip, atol=1e-5)


def test_overfitting_one_batch_reduces_loss():
    torch.manual_seed(0)
    m = tiny(lr=2e-3)
    x = torch.rand(4, 3, 32, 32)
    opt = m.configure_optimizers()
    first = None
    for _ in range(30):
        loss = m.compute_losses(m(x))["total"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = m.compute_losses(m(x))["total"].item()
    assert last < first - 0.3, (first, last)


def test_loss_terms_and_flip_schedule():
    m = tiny(lam_flip=0.5, lam_flip_start_epoch=2, lam_flip_before_start=1.0, lam_depth_sm=0.1)
    assert m.lam_flip_at(0) == 1.0 and m.lam_flip_at(2) == 0.5
    f = m(torch.rand(2, 3, 32, 32))
    losses = m.compute_losses(f, epoch=5)
    assert set(losses) == {"l1", "l1_flip", "depth_sm", "total"}
    expected = losses["l1"] + 0.5 * losses["l1_flip"] + 0.1 * losses["depth_sm"]
    assert torch.allclose(losses["total"], expected)


def test_view_equivariance_loss_against_hand_computation():
    from unsup3d.losses import mirror_view, view_equivariance_loss

    v = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [-0.2, 0.1, 0.0, -0.3, 0.2, 0.0]])
    assert torch.equal(mirror_view(v), v * torch.tensor([1.0, -1, -1, -1, 1, 1]))
    vm = torch.tensor([[0.1, -0.2, -0.3, -0.4, 0.5, 0.6], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # first image: exactly mirrored (0); second: squared differences to (-0.2, -0.1, 0, 0.3, 0.2, 0)
    expected = (0.2**2 + 0.1**2 + 0.3**2 + 0.2**2) / 2
    assert view_equivariance_loss(v, vm).item() == pytest.approx(expected)
    # a spread of true poses satisfies it; a constant yaw offset does not
    yaw = torch.zeros(4, 6)
    yaw[:, 1] = torch.tensor([-0.5, -0.1, 0.2, 0.6])
    assert view_equivariance_loss(yaw, mirror_view(yaw)).item() == 0.0
    offset = torch.tensor([0.0, 0.1, 0.0, 0.0, 0.0, 0.0])  # netV says 0.1 more yaw for every image
    assert view_equivariance_loss(yaw + offset, mirror_view(yaw) + offset).item() == pytest.approx(0.2**2)


def test_view_equivariance_in_training_runs_netv_on_the_mirrored_batch():
    m = tiny(lam_view_equivariance=2.0)
    x = torch.rand(3, 3, 32, 32)
    m.train()
    f = m(x)
    assert f.view_mirrored is not None and f.view_mirrored.shape == (3, 6)
    with torch.no_grad():
        direct = m.core.netV(x.flip(3) * 2 - 1) * m.core.view_ranges(x)
    assert torch.allclose(f.view_mirrored, direct, atol=1e-6)
    losses = m.compute_losses(f)
    from unsup3d.losses import view_equivariance_loss

    expected = view_equivariance_loss(m.core.normalized_view(f.view), m.core.normalized_view(f.view_mirrored))
    assert torch.allclose(losses["view_equivariance"], expected)
    assert torch.allclose(losses["total"], losses["l1"] + 0.5 * losses["l1_flip"] + 2.0 * expected)
    losses["total"].backward()
    assert m.core.netV.network[0].weight.grad.abs().sum() > 0
    m.eval()  # inference makes no extra pass
    assert m(x).view_mirrored is None
    # the default (0) is the original objective
    assert "view_equivariance" not in tiny().compute_losses(tiny().train()(x))


def test_view_mean_prior_is_unbiased_and_leaves_the_spread():
    from unsup3d.losses import view_mean_prior

    v = torch.zeros(4, 6)
    v[:, 0] = torch.tensor([0.1, 0.3, 0.2, 0.2])  # pitch: half means 0.2 and 0.2
    v[:, 1] = torch.tensor([0.5, -0.5, 0.7, -0.7])  # yaw: not a component
    v[:, 4] = torch.tensor([0.1, 0.3, -0.1, -0.1])  # ty: half means 0.2 and -0.1
    assert view_mean_prior(v).item() == pytest.approx(0.2 * 0.2 + 0.2 * -0.1)
    # expectation over batches = squared population mean (no variance term): a zero-mean population
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([view_mean_prior(torch.randn(32, 6, generator=g)) for _ in range(4000)])
    assert abs(draws.mean().item()) < 3 * draws.std().item() / 4000**0.5
    squared = torch.stack([torch.randn(32, 6, generator=g)[:, [0, 4]].mean(0).pow(2).sum() for _ in range(400)])
    assert squared.mean().item() > 2 / 32 * 0.8  # the squared batch mean is biased by var / B
    # gradient: every image of a half gets the same push (the other half's mean): the spread is kept
    w = v.clone().requires_grad_()
    view_mean_prior(w).backward()
    assert torch.allclose(w.grad[:2, 0], torch.full((2,), 0.2 / 2)) and torch.allclose(w.grad[2:, 0], torch.full((2,), 0.2 / 2))
    assert torch.count_nonzero(w.grad[:, 1:4]) == 0 and torch.count_nonzero(w.grad[:, 5]) == 0
    m = tiny(lam_view_mean=3.0)
    f = m(torch.rand(4, 3, 32, 32))
    losses = m.compute_losses(f)
    assert torch.allclose(losses["view_mean"], view_mean_prior(m.core.normalized_view(f.view)))
    assert torch.allclose(losses["total"], losses["l1"] + 0.5 * losses["l1_flip"] + 3.0 * losses["view_mean"])


def test_canonical_tilt_prior_measures_the_lean_of_the_canonical_depth_in_view_units():
    import math

    from unsup3d.losses import canonical_tilt_prior, depth_tilt

    # hand-made planes: depth = 1 + a x + b y over normalised coordinates, with a bump that has no slope
    s = 32
    y, x = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    bump = 0.05 * torch.exp(-(x**2 + y**2) / 0.2)
    depth = torch.stack([1 + 0.02 * x + 0.03 * y + bump, 1 - 0.01 * y + bump])
    assert torch.allclose(depth_tilt(depth), torch.tensor([[0.02, 0.03], [0.0, -0.01]]), atol=1e-5)
    # weights: the slope of the weighted region only (a different plane outside it does not count)
    weight = (x.abs() < 0.5).float().expand(2, s, s)
    outside = torch.where(weight > 0, depth, depth + 0.2 * y)
    assert torch.allclose(depth_tilt(outside, weight), depth_tilt(depth, weight), atol=1e-5)
    # a lean of 6 degrees in every image, with a 60-degree rotation range: (6 / 60)^2
    fov, lean = 10.0, math.radians(6)
    leaning = (1 + math.tan(lean) * math.tan(math.radians(fov) / 2) * y + bump).expand(4, s, s)
    assert canonical_tilt_prior(leaning, None, fov, 60.0).item() == pytest.approx(0.01, rel=1e-3)
    # leans of +6 and -6 degrees in the two halves: a negative value (unbiased; the spread is not penalised)
    both = torch.cat([leaning[:2], (1 - (leaning[2:] - 1 - bump)) + bump])
    assert canonical_tilt_prior(both, None, fov, 60.0).item() == pytest.approx(-0.01, rel=1e-3)
    # in the model: the term, over the canonical alpha, weighted into the total
    m = tiny(lam_canon_tilt=10.0, background_size=2)
    f = m(torch.rand(4, 3, 32, 32))
    losses = m.compute_losses(f)
    expected = canonical_tilt_prior(m.core.depth_from_raw(f.canon_depth_raw), f.canon_alpha[:, 0], m.core.fov,
                                    m.core.xyz_rotation_range)
    assert torch.allclose(losses["canon_tilt"], expected)
    assert torch.allclose(losses["total"], losses["l1"] + 0.5 * losses["l1_flip"] + 10.0 * losses["canon_tilt"])
    assert "canon_tilt" not in tiny().compute_losses(tiny()(torch.rand(2, 3, 32, 32)))


def test_depth_smoothness_is_the_originals_formula():
    """On the rescaled depth (zero-mean, tanh, rescaled; before the border), divided by the range:
    ``mean |d[:, :-1] - d[:, 1:]| / (max - min) + mean |d[:, :, :-1] - d[:, :, 1:]| / (max - min)``."""
    m = tiny(lam_depth_sm=0.1)
    raw = torch.zeros(2, 32, 32)
    raw[:, :, 16:] = 0.5  # a vertical step, in raw units
    raw[1, 8:, :] += 0.25 * torch.arange(24).view(24, 1) / 24
    d = raw - raw.mean((1, 2), keepdim=True)
    d = (1 + d.tanh()) / 2 * 1.1 + (1 - d.tanh()) / 2 * 0.9
    expected = ((d[:, :-1] - d[:, 1:]) / 0.2).abs().mean() + ((d[:, :, :-1] - d[:, :, 1:]) / 0.2).abs().mean()
    f = m(torch.rand(2, 3, 32, 32))
    f.canon_depth_raw = raw
    assert m.compute_losses(f)["depth_sm"].item() == pytest.approx(expected.item(), rel=1e-5)
    # not the raw output's differences (which are 2-4x larger here)
    raw_sm = (raw[:, :-1] - raw[:, 1:]).abs().mean() + (raw[:, :, :-1] - raw[:, :, 1:]).abs().mean()
    assert raw_sm.item() > 1.5 * expected.item()


def test_low_resolution_depth_and_ellipsoid_prior():
    m = tiny(depth_size=8, lam_depth_prior=1.0, depth_prior_steps=100)
    assert m.core.netD.out_size == 8
    f = m(torch.rand(2, 3, 32, 32))
    assert f.canon_depth_raw.shape == (2, 8, 8) and f.canon_depth.shape == (2, 32, 32)
    # bilinear upsampling: no one-pixel pattern can be represented
    d = f.canon_depth[:, :, 2:-2]
    assert (d[:, :, 1:-1] - (d[:, :, :-2] + d[:, :, 2:]) / 2).abs().max() < 0.05 * (d.max() - d.min())
    assert m.depth_prior_weight(0) == 1.0 and m.depth_prior_weight(50) == 0.5 and m.depth_prior_weight(100) == 0
    losses = m.compute_losses(f, step=50)
    from unsup3d.losses import ellipsoid_depth

    target = ellipsoid_depth(32, m.core.border_depth, 0.1)
    assert target[16, 16] < target[0, 0] and target[0, 0] == pytest.approx(m.core.border_depth)
    expected = ((m.core.depth_from_raw(f.canon_depth_raw) - target) / 0.2).pow(2).mean()
    assert torch.allclose(losses["depth_prior"], expected)
    assert "depth_prior" not in m.compute_losses(f, step=100)
    with pytest.raises(ValueError, match="out_size"):
        tiny(depth_size=12)


def test_learning_rate_schedule_and_per_network_rates():
    m = tiny(lr=1e-3, lr_warmup_steps=10, lr_decay="cosine", lr_decay_steps=110, lr_multipliers={"netV": 0.5})
    assert m.lr_factor(0) == pytest.approx(0.1) and m.lr_factor(9) == pytest.approx(1.0)
    assert m.lr_factor(60) == pytest.approx(0.5) and m.lr_factor(110) == pytest.approx(0.0, abs=1e-12)
    conf = m.configure_optimizers()
    opt = conf["optimizer"]
    lrs = {g["name"]: g["initial_lr"] for g in opt.param_groups}  # before the warm-up factor
    assert lrs["netV"] == pytest.approx(5e-4) and lrs["netD"] == pytest.approx(1e-3)
    assert len(tiny().configure_optimizers().param_groups) == 1  # the original: one group, constant lr
    with pytest.raises(ValueError, match="lr_multipliers"):
        tiny(lr_multipliers={"netX": 1.0})
    with pytest.raises(ValueError, match="lr_decay"):
        tiny(lr_decay="step")


def test_no_flip_ablation_and_no_confidence():
    m = tiny(use_flip=False, use_conf_map=False)
    assert m.core.netC is None and m.core.network_names == ("netD", "netA", "netL", "netV")
    f = m(torch.rand(2, 3, 32, 32))
    assert f.recon_image_flip is None and f.conf_sigma_l1 is None
    assert set(m.compute_losses(f)) == {"l1", "total"}


def test_perceptual_loss_without_weights_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("UNSUP3D_VGG16_WEIGHTS", raising=False)
    import unsup3d.vgg as vgg

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(vgg.torch.hub, "load_state_dict_from_url", offline)
    m = tiny(lam_perc=1.0)
    with pytest.raises(RuntimeError, match="lam_perc=0"):
        m.compute_losses(m(torch.rand(1, 3, 32, 32)))
    m2 = tiny(lam_perc=1.0, allow_random_vgg=True)
    with pytest.warns(RuntimeWarning, match="randomly initialised"):
        losses = m2.compute_losses(m2(torch.rand(1, 3, 32, 32)))
    assert "perc" in losses and "perc_flip" in losses
    assert not any(k.startswith("perceptual") for k in m2.state_dict())


def test_nonfinite_loss_raises_naming_step_and_term():
    m = tiny()
    losses = {"l1": torch.tensor(float("nan")), "total": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match=r"global step 0.*l1"):
        m._check_finite(losses, "train")
    m_skip = tiny(on_nonfinite="skip")
    with pytest.warns(RuntimeWarning, match="skipping"):
        assert m_skip._check_finite(losses, "train") is False


def test_nan_weights_are_never_checkpointed():
    m = tiny()
    state = m.state_dict()
    state["core.netD.network.0.weight"] = state["core.netD.network.0.weight"].clone().fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite weights"):
        m.on_save_checkpoint({"state_dict": state})


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="on_nonfinite"):
        tiny(on_nonfinite="ignore")
    with pytest.raises(ValueError, match="amb_light_range"):
        tiny(amb_light_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="lr"):
        tiny(lr=-1.0)
    for bad in (2.5, -1, float("nan"), True):  # the layer is r x r: a fraction used to be truncated silently
        with pytest.raises(ValueError, match="background_size"):
            tiny(background_size=bad)
    with pytest.raises(ValueError, match="image"):
        tiny()(torch.rand(1, 3, 64, 64))


def test_canonical_only_forward_equals_the_full_ones_canonical_factors():
    m = tiny().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        full, canon = m(x), m(x, reconstruct=False)
    for name in ("canon_depth", "canon_albedo", "canon_normal", "canon_diffuse_shading", "canon_shading",
                 "canon_image", "light_ambient", "light_diffuse", "light_direction", "view"):
        assert torch.equal(getattr(full, name), getattr(canon, name)), name
    assert canon.recon_image is None and canon.recon_depth is None and canon.conf_sigma_l1 is None
    assert canon.canon_depth_flip is None


def test_structural_loss_terms_use_the_quarter_resolution_confidence():
    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, lam_struct=0.5)
    assert all(p.requires_grad for p in model.core.netC.out_net2.parameters())  # the head is trained now
    f = model(torch.rand(2, 3, 32, 32))
    losses = model.compute_losses(f, epoch=0)
    assert {"struct", "struct_flip"} <= set(losses)
    expect = losses["l1"] + 0.5 * losses["l1_flip"] + 0.5 * (losses["struct"] + 0.5 * losses["struct_flip"])
    assert torch.isclose(losses["total"], expect)
    with pytest.raises(ValueError, match="struct_loss"):
        Unsup3D(image_size=32, width=0.125, lam_perc=0.0, struct_loss="nope")


def test_symmetric_warmup_makes_the_canonical_factors_symmetric_while_training():
    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, symmetric_warmup_steps=4)
    assert [model.symmetry_weight(s) for s in (0, 3, 4, 6, 8, 20)] == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    x = torch.rand(2, 3, 32, 32)
    f = model.train()(x)
    assert torch.equal(f.canon_albedo, f.canon_albedo.flip(-1)) and torch.equal(f.canon_depth, f.canon_depth.flip(-1))
    # the two reconstructions are then the same image
    assert torch.allclose(f.recon_image, f.recon_image_flip, atol=1e-5)
    g = model.eval()(x)  # evaluation and export never symmetrize
    assert not torch.equal(g.canon_albedo, g.canon_albedo.flip(-1))
    # with the background layer, its canonical alpha is symmetrized with the albedo
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, symmetric_warmup_steps=4, background_size=4)
    f = model.train()(x)
    assert torch.equal(f.canon_alpha, f.canon_alpha.flip(-1)) and torch.equal(f.canon_albedo, f.canon_albedo.flip(-1))
    assert not torch.equal(model.eval()(x).canon_alpha, model.eval()(x).canon_alpha.flip(-1))


def test_blur_curriculum_blurs_the_training_images_only_and_anneals_to_sharp(monkeypatch):
    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, blur_sigma=2.0, blur_steps=4)
    assert [model.input_blur_sigma(s) for s in (0, 1, 2, 4, 9)] == [2.0, 1.5, 1.0, 0.0, 0.0]
    assert Unsup3D(image_size=32, width=0.125, lam_perc=0.0, blur_sigma=2.0).input_blur_sigma(0) == 0.0
    with pytest.raises(ValueError, match="blur_sigma"):
        Unsup3D(image_size=32, width=0.125, lam_perc=0.0, blur_sigma=-1.0)
    seen = []

    class Seen(Exception):
        pass

    def forward(images, reconstruct=True):
        seen.append(images)
        raise Seen

    model.forward = forward
    x = torch.rand(2, 3, 32, 32)
    for step in (0, 4):
        monkeypatch.setattr(type(model), "global_step", property(lambda self, s=step: s))
        with pytest.raises(Seen):
            model.training_step(x, 0)
    blurred, sharp = seen
    assert torch.equal(sharp, x)
    assert torch.allclose(blurred, blur_images(x, 2.0)) and blurred.std() < 0.6 * x.std()
    # the mean colour is kept (a normalised kernel, reflected border)
    assert torch.allclose(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)


def test_symmetric_depth_is_symmetric_in_training_evaluation_and_export_and_leaves_the_albedo_free():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, symmetric_depth=True, depth_size=16)
    for f in (model.train()(x), model.eval()(x), model.core(x, reconstruct=False)):
        assert torch.equal(f.canon_depth, f.canon_depth.flip(-1))
        assert not torch.equal(f.canon_albedo, f.canon_albedo.flip(-1))
    # the losses that read the depth (smoothness, prior) see the same symmetric depth
    raw = model.eval()(x).canon_depth_raw
    d = model.core.depth_from_raw(raw)
    assert torch.equal(d, d.flip(-1))
    # off (the original): the same networks give an asymmetric depth
    model.core.symmetric_depth = False
    assert not torch.equal(model.eval()(x).canon_depth, model.eval()(x).canon_depth.flip(-1))


def test_background_layer_composites_a_static_background_under_the_warped_canonical():
    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, background_size=4)
    assert model.core.netA.cout == 4 and "netB" in model.core.network_names
    x = torch.rand(2, 3, 32, 32)
    x_ = x * 2 - 1
    raw = model.core.predict(x_)
    assert raw["background"].shape == (2, 3 * 16)
    # alpha = 0 everywhere: the reconstruction is the background layer (where the surface is valid)
    raw["albedo"] = torch.cat([raw["albedo"][:, :3], -torch.ones_like(raw["albedo"][:, :1])], 1)
    f = model.core.render_factors(x_, raw)
    bg = torch.nn.functional.interpolate(raw["background"].view(2, 3, 4, 4), size=(32, 32), mode="bilinear",
                                         align_corners=False)
    assert torch.allclose(f.background, bg)
    assert torch.allclose(f.recon_image, bg * f.recon_mask, atol=1e-6)
    assert torch.allclose(f.recon_image_flip, bg * f.recon_mask, atol=1e-6)
    # alpha = 1: the original model's reconstruction
    raw["albedo"][:, 3:] = 1.0
    g = model.core.render_factors(x_, raw)
    plain = Unsup3D(image_size=32, width=0.125, lam_perc=0.0)
    h = plain.core.render_factors(x_, {**raw, "albedo": raw["albedo"][:, :3], "background": None})
    assert torch.allclose(g.recon_image, h.recon_image, atol=1e-6) and h.canon_alpha is None
    assert torch.equal(g.canon_alpha, torch.ones(2, 1, 32, 32))
    # export's canonical-only pass has no background, and the albedo is RGB
    e = model.eval()(x, reconstruct=False)
    assert e.canon_albedo.shape == (2, 3, 32, 32) and e.background is None


def test_the_core_is_the_whole_model_for_inference():
    """The training module adds nothing to the forward pass in eval mode: its core alone gives the same factors,
    and export-side code takes either."""
    from unsup3d.core import Unsup3DCore, core_of

    m = tiny(lam_view_equivariance=1.0, symmetric_warmup_steps=10).eval()
    assert isinstance(m.core, Unsup3DCore) and core_of(m) is m.core and core_of(m.core) is m.core
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = m(x), m.core(x)
    for name in ("canon_depth", "canon_albedo", "view", "recon_image", "recon_image_flip", "conf_sigma_l1"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.view_mirrored is None  # no mirrored netV pass outside training
    with pytest.raises(TypeError, match="Unsup3DCore"):
        core_of(torch.nn.Linear(2, 2))
    # A bare core has only geometry and networks: no losses, no optimiser, no Lightning.
    core = Unsup3DCore(image_size=32, width=0.125)
    assert not any(isinstance(mod, type(m)) for mod in core.modules())
    assert core.network_names == ("netD", "netA", "netL", "netV", "netC")


def test_checkpoints_written_before_the_core_load_unchanged(tmp_path):
    """Earlier versions saved the networks as ``netD.*`` ...; they load into ``core.netD.*`` (one pre-hook)."""
    m = tiny()
    old = {k.removeprefix("core."): v for k, v in m.state_dict().items()}
    assert "netD.network.0.weight" in old and not any(k.startswith("core.") for k in old)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": old, "hyper_parameters": dict(m.hparams)}, path)
    m2 = load_model(path, trust=True)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    m3 = tiny()
    torch.manual_seed(1)
    m3.load_state_dict({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in old.items()})
    assert not torch.equal(m3.core.netD.network[0].weight, m.core.netD.network[0].weight)  # it was loaded


def test_optimizer_is_built_from_a_partial_and_defaults_to_the_originals_adam():
    import functools

    m = tiny(lr=2e-4, beta1=0.5, weight_decay=0.0)
    opt = m.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.5, 0.999)
    assert opt.param_groups[0]["lr"] == 2e-4 and opt.defaults["weight_decay"] == 0.0
    sgd = tiny(optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), lr_multipliers={"netV": 0.5})
    opt = sgd.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["netV"] == pytest.approx(0.5 * sgd.hparams.lr) and lrs["netD"] == pytest.approx(sgd.hparams.lr)
    assert "optimizer" not in sgd.hparams  # a callable is not a hyper-parameter; checkpoints keep lr / betas


def test_loss_weights_are_one_mapping_that_the_total_follows():
    m = tiny(lam_flip=0.5, lam_depth_sm=0.1, lam_view_mean=2.0, lam_depth_prior=4.0, depth_prior_steps=100,
             depth_prior_height=0.2)
    w = m.loss_weights(epoch=0, step=50)
    assert w["l1"] == 1.0 and w["l1_flip"] == 0.5 and w["depth_prior"] == pytest.approx(2.0)
    assert w["perc"] == 0.0 and w["view_mean"] == 2.0 and w["depth_sm"] == 0.1
    f = m(torch.rand(4, 3, 32, 32))
    losses = m.compute_losses(f, epoch=0, step=50)
    assert set(losses) == {"l1", "l1_flip", "depth_sm", "view_mean", "depth_prior", "total"}
    expected = sum(w[k] * losses[k] for k in losses if k != "total")
    assert torch.allclose(losses["total"], expected)
    assert "depth_prior" not in m.compute_losses(f, epoch=0, step=100)  # weight 0: not computed


def test_scheduler_is_built_from_a_partial_and_replaces_the_built_in_schedule():
    import functools

    m = tiny(scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10, gamma=0.5))
    out = m.configure_optimizers()
    sched = out["lr_scheduler"]["scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and sched.optimizer is out["optimizer"]
    assert out["lr_scheduler"]["interval"] == "step" and "scheduler" not in m.hparams
    with pytest.raises(ValueError, match="model.scheduler replaces"):
        tiny(scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10), lr_decay="cosine")


def test_upsample_bilinear_equals_interpolate():
    """The matrix-product resampling of the depth and the background layer equals F.interpolate's bilinear
    (align_corners=False), up- and down-sampling, values and gradients, and keeps fp32 under bf16 autocast."""
    import torch.nn.functional as F

    from unsup3d import core as core_mod
    from unsup3d.core import upsample_bilinear

    torch.manual_seed(0)
    for shape, size in (((3, 1, 32, 32), (64, 64)), ((2, 3, 2, 2), (64, 64)), ((2, 3, 5, 7), (9, 4))):
        x = torch.rand(*shape, dtype=torch.float64, requires_grad=True)
        g = torch.randn(shape[0], shape[1], *size, dtype=torch.float64)
        want = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        (gx,) = torch.autograd.grad((want * g).sum(), x)
        got = upsample_bilinear(x, size)
        (gy,) = torch.autograd.grad((got * g).sum(), x)
        assert got.shape == want.shape and got.dtype == torch.float64
        assert torch.allclose(got, want, atol=1e-12) and torch.allclose(gy, gx, atol=1e-12)
    # the cached matrices, first built under inference mode (a validation pass), still train afterwards
    core_mod._interpolation_matrix.cache_clear()
    with torch.inference_mode():
        upsample_bilinear(torch.rand(2, 1, 32, 32), (64, 64))
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    upsample_bilinear(x, (64, 64)).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    x = torch.rand(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = upsample_bilinear(x, (64, 64))
    assert out.dtype == torch.float32
    assert torch.allclose(out, F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False), atol=1e-6)


def test_view_width_widens_netV_alone():
    base = Unsup3D(image_size=32, width=0.25, lam_perc=0.0)
    wide = Unsup3D(image_size=32, width=0.25, lam_perc=0.0, view_width=1.0)
    assert wide.core.netV.nf == 32 and base.core.netV.nf == 8
    for name in ("netD", "netA", "netL"):
        a, b = getattr(base.core, name), getattr(wide.core, name)
        assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert wide(torch.rand(2, 3, 32, 32)).view.shape == (2, 6)
    with pytest.raises(ValueError, match="view_width"):
        Unsup3D(image_size=32, width=0.25, lam_perc=0.0, view_width=0.0)


def test_render_at_view_reproduces_the_reconstruction_and_turns_the_face():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    for background_size in (0, 2):
        model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, background_size=background_size).eval()
        with torch.no_grad():
            f = model(x)
            same = model.core.render_at_view(f, f.view)
            view = f.view.clone()
            view[:, 1] += math.radians(20)
            turned = model.core.render_at_view(f, view)
        inside = f.recon_mask.expand_as(same) > 0
        assert inside.float().mean() > 0.5
        assert torch.allclose(same[inside], f.recon_image[inside], atol=1e-5)
        assert (turned - same).abs().mean() > 0.01
    with pytest.raises(ValueError, match="B x 6"):
        model.core.render_at_view(f, f.view[:1])


def _term_and_grads(model, x, term, loss):
    """Check that ``term`` is among ``model``'s losses of ``x`` in training (not in a plain model's, and weighted
    into the total) and return the training factors and which networks ``loss(f)`` sends a gradient to."""
    f = model.train()(x)
    losses = model.compute_losses(f)
    plain = Unsup3D(image_size=x.shape[-1], width=0.125, lam_perc=0.0)
    assert term in losses and term not in plain.compute_losses(plain(x))
    assert torch.allclose(losses["total"], sum(w * losses[k] for k, w in model.loss_weights(0, 0).items()
                                               if k in losses))
    model.zero_grad()
    loss(f).backward()
    return f, {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model.core, name).parameters())
               for name in ("netD", "netA", "netL", "netV", "netC")}


def test_view_cycle_trains_netV_alone_to_read_the_turn_of_its_own_renders():
    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, background_size=2, lam_view_cycle=1.0,
                    view_cycle_range=(0.0, 30.0, 0.0), encoder_init="kaiming")
    assert model.loss_weights(0, 0)["view_cycle"] == 1.0
    late = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, lam_view_cycle=2.0, view_cycle_start=5)
    assert [late.loss_weights(0, s)["view_cycle"] for s in (0, 4, 5, 9)] == [0.0, 0.0, 2.0, 2.0]
    x = torch.rand(4, 3, 32, 32)
    f, grads = _term_and_grads(model, x, "view_cycle", model.view_cycle)
    assert grads == {"netD": False, "netA": False, "netL": False, "netV": True, "netC": False}
    # fixed renders and turns: netV learns to read them (the loss falls well below where it starts)
    with torch.no_grad():
        f = model.eval()(x)
    opt = torch.optim.Adam(model.core.netV.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss = model.view_cycle(f, torch.Generator().manual_seed(1))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ValueError, match="view_cycle_range"):
        Unsup3D(image_size=32, width=0.125, lam_perc=0.0, view_cycle_range=(10.0, -1.0, 0.0))


def _fixed_factors(model, depth, albedo, view, light=None, ambient=0.0, diffuse=1.0):
    """The model's factors of a random image with the canonical depth (1 x S x S), albedo (1 x 3 x S x S), light and
    view (1 x 6) set by hand, no background layer."""
    import dataclasses

    core = model.core
    with torch.no_grad():
        f = model(torch.rand(1, 3, core.image_size, core.image_size))
    extra = {} if light is None else {"light_direction": light}
    return dataclasses.replace(f, canon_depth=depth, canon_normal=core.renderer.normals(depth), canon_albedo=albedo,
                               light_ambient=torch.full((1,), ambient), light_diffuse=torch.full((1,), diffuse),
                               view=view, canon_alpha=None, background=None, **extra)


def test_render_at_view_keeps_the_light_in_the_camera_frame():
    # a white ellipsoid lit by a diffuse light only: the turned render's brightness must be the Lambert term of
    # the surface as the new view sees it (normals of the depth in that view) under the light the original view
    # had in the camera frame (R l), not the canonical shading carried along with the face (to the resampling's
    # 0.035 of difference between the view's normals and the turned canonical ones; carried along: 0.19)
    from unsup3d.renderer import euler_to_rotation_matrix, shading

    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0).eval()
    core = model.core
    depth = core.shape_prior(0.5).unsqueeze(0)
    light = shading.light_direction(torch.tensor([[0.6, -0.3]]))
    view = torch.tensor([[0.1, -0.2, 0.05, 0.0, 0.0, 0.0]])
    f = _fixed_factors(model, depth, torch.ones(1, 3, 32, 32), view, light, ambient=0.0, diffuse=1.0)
    with torch.no_grad():
        turned = view.clone()
        turned[:, 1] += math.radians(25)
        image = core.render_at_view(f, turned)[0, 0] / 2 + 0.5
        seen = core.renderer.normals(core.renderer.warp_canon_depth(depth, turned))
        camera_light = (euler_to_rotation_matrix(view[:, :3]) @ light.unsqueeze(-1)).squeeze(-1)
        expected = shading.lambertian(seen, camera_light)[0]
        carried = shading.lambertian(seen, (euler_to_rotation_matrix(turned[:, :3]) @ light.unsqueeze(-1)).squeeze(-1))[0]
    inner = (depth[0] < core.border_depth - 0.02)[4:-4, 4:-4]  # the ellipsoid, away from its rim
    err = (image - expected)[4:-4, 4:-4][inner].abs().mean()
    assert err < 0.05 < 0.1 < (image - carried)[4:-4, 4:-4][inner].abs().mean()


def test_shifted_image_is_the_render_at_the_shifted_view():
    # the equivariance's target, end to end through the renderer: a face rendered at the view shift_view gives for
    # (du, dv) pixels is the face rendered at the original view, moved by (du, dv) pixels as kornia's translate
    # moves the input (to the face's relief: points off the rotation centre's depth move a little more or less)
    from kornia.geometry.transform import translate

    from unsup3d.renderer import intrinsics_values, shift_view

    torch.manual_seed(0)
    model = Unsup3D(image_size=64, width=0.125, lam_perc=0.0).eval()
    core = model.core
    depth = core.shape_prior(0.3).unsqueeze(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    albedo = torch.stack([torch.sin(5 * xx) * torch.cos(3 * yy), torch.cos(4 * xx + yy), xx * yy]).unsqueeze(0)
    view = torch.tensor([[0.05, 0.3, -0.05, 0.0, 0.0, 0.0]])
    f = _fixed_factors(model, depth, albedo, view, ambient=1.0, diffuse=0.0)
    with torch.no_grad():
        shift = torch.tensor([[3.0, -2.0]])
        focal = intrinsics_values(64, 64, core.fov)[0]
        at_shifted_view = core.render_at_view(f, shift_view(view, shift, focal, core.rot_center_depth))
        moved = translate(core.render_at_view(f, view), shift, mode="nearest", padding_mode="border")
        wrong_way = translate(core.render_at_view(f, view), -shift, mode="nearest", padding_mode="border")
    inner = (translate(depth.unsqueeze(1), shift, mode="nearest", padding_mode="border")[0, 0]
             < core.border_depth - 0.01)[6:-6, 6:-6]
    assert inner.float().mean() > 0.3
    err = (at_shifted_view - moved)[0, :, 6:-6, 6:-6][:, inner].abs().mean()
    assert err < 0.1 * (at_shifted_view - wrong_way)[0, :, 6:-6, 6:-6][:, inner].abs().mean()


def test_view_shift_trains_netV_to_read_a_shift_as_a_translation():
    import dataclasses

    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, lam_view_shift=2.0, view_shift_pixels=3,
                    encoder_init="kaiming")
    assert model.loss_weights(0, 0)["view_shift"] == 2.0
    # a bright blob on a dark ground at a different place in each image: its position is readable
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.tensor([[12.0, 14.0], [18.0, 15.0], [15.0, 19.0], [16.0, 12.0]])
    blob = torch.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2) / 18)
    x = torch.stack([blob, 0.5 * blob, 1 - blob], 1)
    f, grads = _term_and_grads(model, x, "view_shift", model.view_shift)
    assert grads == {"netD": False, "netA": False, "netL": False, "netV": True, "netC": False}
    # the same draws give the same loss; netV learns the equivariance (the loss falls well below where it starts)
    a, b = (model.view_shift(f, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    opt = torch.optim.Adam(model.core.netV.parameters(), lr=2e-3)
    first = None
    for i in range(60):
        with torch.no_grad():
            f = model.core(x)
        f.view = model.core.netV(f.input) * model.core.view_ranges(x)
        loss = model.view_shift(f, torch.Generator().manual_seed(i))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    # the rotation is held only with view_shift_rotation: a netV whose rotation follows the shift pays for it then
    both = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, lam_view_shift=1.0, view_shift_rotation=True)
    both.core.load_state_dict(model.core.state_dict())
    moving = dataclasses.replace(f)
    for m in (model, both):
        m.core.netV.register_forward_hook(lambda mod, inp, out: out + inp[0][:, :1, :, :8].mean((1, 2, 3))[:, None])
    gen = torch.Generator
    assert both.view_shift(moving, gen().manual_seed(5)) > model.view_shift(moving, gen().manual_seed(5)) + 1e-3
    for bad in (0, 16, 2.5):
        with pytest.raises(ValueError, match="view_shift_pixels"):
            Unsup3D(image_size=32, width=0.125, lam_perc=0.0, view_shift_pixels=bad)


def test_shift_augment_moves_each_training_image_and_its_true_depth_together():
    from kornia.geometry.transform import translate

    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, supervised_depth=True, shift_augment_pixels=3)
    batch = {"image": torch.rand(6, 3, 32, 32), "depth": 0.9 + 0.2 * torch.rand(6, 32, 32)}
    seen = {}

    def capture(images, depth):
        seen["image"], seen["depth"] = images, depth
        return images.sum() * 0 + depth.sum() * 0

    model.supervised_depth_loss = capture
    model.log = lambda *a, **k: None
    model.training_step(batch, 0)
    moved = 0
    for b in range(6):
        found = [(du, dv) for du in range(-3, 4) for dv in range(-3, 4)
                 if torch.equal(translate(batch["image"][b:b + 1], torch.tensor([[du, dv]], dtype=torch.float32),
                                          mode="nearest", padding_mode="border")[0], seen["image"][b])]
        assert len(found) == 1
        shift = torch.tensor([found[0]], dtype=torch.float32)
        expected = translate(batch["depth"][b:b + 1, None], shift, mode="nearest", padding_mode="border")[0, 0]
        assert torch.equal(seen["depth"][b], expected)
        moved += found[0] != (0, 0)
    assert moved >= 4
    with pytest.raises(ValueError, match="shift_augment_pixels"):
        Unsup3D(image_size=32, width=0.125, lam_perc=0.0, shift_augment_pixels=-1)


def test_canon_aspect_prior_reaches_the_alpha_only():
    from unsup3d.losses import canonical_aspect_prior

    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, background_size=2, lam_canon_aspect=1.0,
                    encoder_init="kaiming")
    x = torch.rand(6, 3, 32, 32)
    f, grads = _term_and_grads(model, x, "canon_aspect",
                               lambda f: canonical_aspect_prior(f.canon_alpha[:, 0], f.view))
    assert grads == {"netD": False, "netA": True, "netL": False, "netV": False, "netC": False}
    assert torch.allclose(model.compute_losses(f)["canon_aspect"], canonical_aspect_prior(f.canon_alpha[:, 0], f.view))
    late = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, lam_canon_aspect=2.0, canon_aspect_start=5)
    assert [late.loss_weights(0, s)["canon_aspect"] for s in (0, 4, 5, 9)] == [0.0, 0.0, 2.0, 2.0]
    plain = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, lam_canon_aspect=1.0)  # no alpha: no term
    assert "canon_aspect" not in plain.compute_losses(plain.train()(x))
