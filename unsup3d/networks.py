"""The networks of Wu, Rupprecht and Vedaldi (CVPR 2020), layer for layer.

Five networks decompose an image into photo-geometric factors:

========  ==========================================  ======================================
name      architecture (original release, 64 px)      output
========  ==========================================  ======================================
``netD``  ``EDDeconv(3, 1, zdim=256, nf=64)``, linear  canonical depth, ``B x 1 x H x W``
``netA``  ``EDDeconv(3, 3, zdim=256, nf=64)``, tanh    canonical albedo, ``B x 3 x H x W``
``netL``  ``Encoder(3, 4, nf=32)``, tanh               lighting, ``B x 4``
``netV``  ``Encoder(3, 6, nf=32)``, tanh               viewpoint, ``B x 6``
``netC``  ``ConfNet(3, 2, zdim=128, nf=64)``           confidence maps, ``B x 2 x H x W`` and
                                                       ``B x 2 x H/4 x W/4`` (softplus)
========  ==========================================  ======================================

At ``image_size=64`` and ``width=1`` the modules, their ``nn.Sequential`` indices and their
``state_dict`` keys and shapes are exactly those of the original release, so its ``netD`` ...
``netC`` checkpoints load with ``strict=True``.

Other image sizes (32 and 128) change the number of stride-2 stages so that the bottleneck is
still ``4 x 4 -> 1 x 1`` and the outputs are full size (and quarter size for the second
confidence map). The channel width of a stage is tied to its *resolution*, as in the original
at 64 px: ``8 nf`` at 4 x 4, ``4 nf`` at 8 x 8, ``2 nf`` at 16 x 16 and ``nf`` at 32 x 32 and
above (see :func:`stage_channels`). So 128 px adds one ``nf``-wide stage at the outside, and
32 px drops the outermost stage (its first convolution maps the image straight to ``2 nf``).

``width`` scales every channel count (``nf``, ``zdim`` and the encoders' ``nf``) for small
models that train on a CPU. GroupNorm keeps the original's 4 channels per group at every width
(a narrower network has fewer groups; see :func:`group_count`). VGG16 for the perceptual loss is in
:mod:`unsup3d.vgg`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "SUPPORTED_IMAGE_SIZES",
    "ConfNet",
    "EDDeconv",
    "Encoder",
    "ENCODER_INITS",
    "build_networks",
    "group_count",
    "init_encoder",
    "scaled_width",
    "stage_channels",
]

SUPPORTED_IMAGE_SIZES: tuple[int, ...] = (32, 64, 128)

# Channels per GroupNorm group in the original: GroupNorm(16, nf), GroupNorm(32, 2 nf), ... at nf = 64.
_GN_CHANNELS_PER_GROUP = 4


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(
            f"image_size must be one of {SUPPORTED_IMAGE_SIZES} (the networks halve it down to a 4 x 4 "
            f"bottleneck); got {image_size!r}"
        )
    return int(image_size)


def _num_down(image_size: int) -> int:
    """Number of stride-2 stages from ``image_size`` down to 4 x 4 (3, 4, 5 for 32, 64, 128)."""
    return int(math.log2(image_size // 4))


def stage_channels(resolution: int, nf: int) -> int:
    """Channels of a stage whose feature maps are ``resolution x resolution``.

    Follows the original 64 px networks: ``8 nf`` at 4, ``4 nf`` at 8, ``2 nf`` at 16 and ``nf``
    at 32 and above.
    """
    return nf * min(8, max(1, 32 // resolution))


def group_count(channels: int) -> int:
    """GroupNorm group count for ``channels`` channels: groups of 4 channels, as the original.

    The original uses ``GroupNorm(16, nf)``, ``GroupNorm(32, 2 nf)``, ... at ``nf = 64``: 4 channels
    per group at every stage. That is kept at every width (a narrow network gets fewer groups, not
    smaller ones: at width 0.25 a 16-channel stage has 4 groups of 4). When 4 does not divide the
    channel count, the group count is the largest divisor of ``channels`` not above ``channels // 4``.
    """
    groups = max(1, channels // _GN_CHANNELS_PER_GROUP)
    while channels % groups:
        groups -= 1
    return groups


def scaled_width(base: int, width: float) -> int:
    """``round(base * width)``, at least 1."""
    if not width > 0:
        raise ValueError(f"width must be > 0; got {width}")
    return max(1, round(base * width))


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels), channels)


def _check_input(x: Tensor, cin: int, image_size: int, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(
            f"{name} expects a B x {cin} x {image_size} x {image_size} tensor; got shape {tuple(x.shape)}"
        )
    _, c, h, w = x.shape
    if c != cin:
        raise ValueError(f"{name} expects {cin} input channels; got {c} (shape {tuple(x.shape)})")
    if h != image_size or w != image_size:
        raise ValueError(
            f"{name} was built for {image_size} x {image_size} images; got {h} x {w} (shape {tuple(x.shape)})"
        )


def _down_stages(cin: int, nf: int, image_size: int, norm: bool, act: type[nn.Module]) -> list[nn.Module]:
    """Stride-2 stages ``image_size -> 4``: ``Conv(4, 2, 1) [GN] act`` each; no GN on the last."""
    layers: list[nn.Module] = []
    res, c_prev = image_size, cin
    n = _num_down(image_size)
    for i in range(n):
        res //= 2
        c = stage_channels(res, nf)
        layers.append(nn.Conv2d(c_prev, c, kernel_size=4, stride=2, padding=1, bias=False))
        if norm and i < n - 1:
            layers.append(_gn(c))
        if act is nn.LeakyReLU:
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        else:
            layers.append(act(inplace=True))
        c_prev = c
    return layers


# ----------------------------------------------------------------------------------------------
# the five networks
# ----------------------------------------------------------------------------------------------


def _encoder_to_code(cin: int, nf: int, zdim: int, image_size: int) -> list[nn.Module]:
    """The normalised downsampling half shared by EDDeconv and ConfNet: ``S x S`` -> ``4 x 4``,
    then a 4x4 convolution to a ``zdim x 1 x 1`` code (ReLU)."""
    return _down_stages(cin, nf, image_size, norm=True, act=nn.LeakyReLU) + [
        nn.Conv2d(nf * 8, zdim, kernel_size=4, stride=1, padding=0, bias=False),  # 4x4 -> 1x1
        nn.ReLU(inplace=True),
    ]


class Encoder(nn.Module):
    """Plain convolutional encoder to a vector (netL: lighting, netV: viewpoint).

    At 64 px: ``Conv(cin, nf) ReLU Conv(nf, 2nf) ReLU Conv(2nf, 4nf) ReLU Conv(4nf, 8nf) ReLU``
    (each 4 x 4, stride 2: 64 -> 32 -> 16 -> 8 -> 4), ``Conv(8nf, 8nf, 4) ReLU`` (4 -> 1),
    ``Conv(8nf, cout, 1)`` and the optional activation; all without bias.

    Args:
        cin: input channels.
        cout: output size.
        nf: base width (channels of the 32 x 32 stage).
        activation: module class appended at the end (``nn.Tanh``), or ``None``.
        image_size: 32, 64 or 128.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        nf: int = 64,
        activation: type[nn.Module] | None = nn.Tanh,
        image_size: int = 64,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.nf = cin, cout, nf
        image_size = self.image_size = _check_image_size(image_size)
        network = _down_stages(cin, nf, image_size, norm=False, act=nn.ReLU)
        network += [
            nn.Conv2d(nf * 8, nf * 8, kernel_size=4, stride=1, padding=0, bias=False),  # 4x4 -> 1x1
            nn.ReLU(inplace=True),
            nn.Conv2d(nf * 8, cout, kernel_size=1, stride=1, padding=0, bias=False),
        ]
        if activation is not None:
            network.append(activation())
        self.network = nn.Sequential(*network)

    def forward(self, x: Tensor) -> Tensor:
        """``B x cin x S x S -> B x cout`` (``S = image_size``)."""
        _check_input(x, self.cin, self.image_size, type(self).__name__)
        return self.network(x).reshape(x.size(0), -1)


ENCODER_INITS = ("pytorch", "kaiming")


@torch.no_grad()
def init_encoder(encoder: Encoder, scheme: str = "kaiming", output_std: float = 0.1) -> Encoder:
    """Re-initialise a plain :class:`Encoder` (netV, netL) in place.

    The encoders have no normalisation layers. With PyTorch's default initialisation each
    ``Conv + ReLU`` stage shrinks the activations about 2.5x, so at 64 px netV's and netL's outputs
    start with a spread of about 1e-3 across images (0.05 degrees of rotation) and stay nearly
    constant for the first few hundred steps, while netD and netA (GroupNorm) already learn. With
    ``"kaiming"``, the hidden convolutions get He-normal weights (fan-in, ReLU gain), which keep the
    activation scale, and the last convolution is scaled so the pre-activation output spread is
    about ``output_std``; the encoders then respond from the first steps.

    Args:
        encoder: the encoder to initialise.
        scheme: ``"pytorch"`` (leave PyTorch's default, the original release) or ``"kaiming"``.
        output_std: spread of the last layer's output for unit-variance features (``"kaiming"``).

    Returns:
        The same encoder.
    """
    if scheme not in ENCODER_INITS:
        raise ValueError(f"encoder init must be one of {ENCODER_INITS}, got {scheme!r}")
    if scheme == "pytorch":
        return encoder
    convs = [m for m in encoder.network if isinstance(m, nn.Conv2d)]
    for conv in convs[:-1]:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    last = convs[-1]
    fan_in = last.weight[0].numel()
    # ReLU features of He-initialised layers have second moment ~1; sqrt(2) for the half that is 0.
    nn.init.normal_(last.weight, std=output_std * math.sqrt(2.0 / fan_in))
    return encoder


class EDDeconv(nn.Module):
    """Encoder-decoder with transposed convolutions (netD: depth, netA: albedo).

    At 64 px (indices of ``network``): 0-8 three ``Conv(4, s2) GN LeakyReLU(0.2)`` stages
    (64 -> 8, widths nf, 2nf, 4nf), 9-10 ``Conv(4nf, 8nf, 4, s2) LeakyReLU`` (8 -> 4), 11-12
    ``Conv(8nf, zdim, 4) ReLU`` (4 -> 1); 13-16 ``ConvT(zdim, 8nf, 4) ReLU Conv(8nf, 8nf, 3) ReLU``
    (1 -> 4); 17-34 three ``ConvT(4, s2) GN ReLU Conv(3) GN ReLU`` stages (4 -> 32, widths 4nf,
    2nf, nf); 35 nearest ``Upsample(x2)`` (32 -> 64); 36-41 ``Conv(nf, nf, 3) GN ReLU
    Conv(nf, nf, 5) GN ReLU``; 42 ``Conv(nf, cout, 5)``; 43 optional activation. All convolutions
    are without bias.

    Args:
        cin: input channels.
        cout: output channels.
        zdim: bottleneck size.
        nf: base width (channels at 32 x 32 and above).
        activation: module class appended at the end (``nn.Tanh``), or ``None`` (linear output).
        image_size: 32, 64 or 128.
        out_size: output resolution, a power of 2 from 8 up to ``image_size`` (default
            ``image_size``, the original). A smaller output drops the last transposed-conv stages:
            the decoder stops at ``out_size / 2``, then the nearest upsampling and the three
            convolutions run at ``out_size`` (e.g. a depth map predicted at 32 x 32 and upsampled
            by the caller, which cannot hold one-pixel patterns).
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        zdim: int = 128,
        nf: int = 64,
        activation: type[nn.Module] | None = nn.Tanh,
        image_size: int = 64,
        out_size: int | None = None,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.zdim, self.nf = cin, cout, zdim, nf
        image_size = self.image_size = _check_image_size(image_size)
        out_size = image_size if out_size is None else int(out_size)
        if out_size < 8 or out_size > image_size or out_size & (out_size - 1):
            raise ValueError(f"out_size must be a power of 2 in [8, image_size={image_size}]; got {out_size}")
        self.out_size = out_size
        network = _encoder_to_code(cin, nf, zdim, image_size)
        # upsampling
        network += [
            nn.ConvTranspose2d(zdim, nf * 8, kernel_size=4, stride=1, padding=0, bias=False),  # 1 -> 4
            nn.ReLU(inplace=True),
            nn.Conv2d(nf * 8, nf * 8, kernel_size=3, stride=1, padding=1, bias=False),
            nn.ReLU(inplace=True),
        ]
        res, c_prev = 4, nf * 8
        while res < out_size // 2:  # transposed-conv stages up to half the output resolution
            res *= 2
            c = stage_channels(res, nf)
            network += [
                nn.ConvTranspose2d(c_prev, c, kernel_size=4, stride=2, padding=1, bias=False),
                _gn(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, bias=False),
                _gn(c),
                nn.ReLU(inplace=True),
            ]
            c_prev = c
        network += [
            nn.Upsample(scale_factor=2, mode="nearest"),  # half -> output resolution
            nn.Conv2d(c_prev, nf, kernel_size=3, stride=1, padding=1, bias=False),
            _gn(nf),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, nf, kernel_size=5, stride=1, padding=2, bias=False),
            _gn(nf),
            nn.ReLU(inplace=True),
            nn.Conv2d(nf, cout, kernel_size=5, stride=1, padding=2, bias=False),
        ]
        if activation is not None:
            network.append(activation())
        self.network = nn.Sequential(*network)

    def forward(self, x: Tensor) -> Tensor:
        """``B x cin x S x S -> B x cout x S' x S'`` (``S = image_size``, ``S' = out_size``)."""
        _check_input(x, self.cin, self.image_size, type(self).__name__)
        return self.network(x)


class ConfNet(nn.Module):
    """Confidence network (netC): two maps of positive values (softplus), used as sigma.

    At 64 px, ``network``: the same encoder as :class:`EDDeconv` (indices 0-12), then
    ``ConvT(zdim, 8nf, 4) ReLU`` (1 -> 4) and two ``ConvT(4, s2) GN ReLU`` stages (4 -> 16,
    widths 4nf, 2nf). ``out_net1``: ``ConvT(2nf, nf) GN ReLU ConvT(nf, nf) GN ReLU
    Conv(nf, cout, 5) Softplus`` (16 -> 64); ``out_net2``: ``Conv(2nf, cout, 3) Softplus`` at
    16 x 16. All convolutions are without bias.

    Args:
        cin: input channels.
        cout: channels of each output map (2 in the original: sigma for the reconstruction from
            the canonical view and for the one from its horizontal flip).
        zdim: bottleneck size.
        nf: base width (channels at 32 x 32 and above).
        image_size: 32, 64 or 128.
    """

    def __init__(self, cin: int, cout: int = 2, zdim: int = 128, nf: int = 64, image_size: int = 64) -> None:
        super().__init__()
        self.cin, self.cout, self.zdim, self.nf = cin, cout, zdim, nf
        image_size = self.image_size = _check_image_size(image_size)
        network = _encoder_to_code(cin, nf, zdim, image_size)
        # upsampling to quarter resolution
        network += [
            nn.ConvTranspose2d(zdim, nf * 8, kernel_size=4, stride=1, padding=0, bias=False),  # 1 -> 4
            nn.ReLU(inplace=True),
        ]
        res, c_prev = 4, nf * 8
        while res < image_size // 4:
            res *= 2
            c = stage_channels(res, nf)
            network += [
                nn.ConvTranspose2d(c_prev, c, kernel_size=4, stride=2, padding=1, bias=False),
                _gn(c),
                nn.ReLU(inplace=True),
            ]
            c_prev = c
        self.network = nn.Sequential(*network)

        # full-resolution head: two transposed-conv stages, quarter -> full
        out_net1: list[nn.Module] = []
        c1 = c_prev
        for _ in range(2):
            res *= 2
            c = stage_channels(res, nf)
            out_net1 += [
                nn.ConvTranspose2d(c1, c, kernel_size=4, stride=2, padding=1, bias=False),
                _gn(c),
                nn.ReLU(inplace=True),
            ]
            c1 = c
        out_net1 += [nn.Conv2d(c1, cout, kernel_size=5, stride=1, padding=2, bias=False), nn.Softplus()]
        self.out_net1 = nn.Sequential(*out_net1)

        # quarter-resolution head
        self.out_net2 = nn.Sequential(
            nn.Conv2d(c_prev, cout, kernel_size=3, stride=1, padding=1, bias=False), nn.Softplus()
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``B x cin x S x S -> (B x cout x S x S, B x cout x S/4 x S/4)``, both positive."""
        _check_input(x, self.cin, self.image_size, type(self).__name__)
        h = self.network(x)
        return self.out_net1(h), self.out_net2(h)


def build_networks(
    image_size: int = 64,
    width: float = 1.0,
    *,
    nf: int | None = None,
    zdim: int | None = None,
    encoder_nf: int | None = None,
    conf_zdim: int | None = None,
    with_confidence: bool = True,
    depth_size: int | None = None,
    background_size: int = 0,
    view_width: float | None = None,
) -> dict[str, nn.Module]:
    """Build the five networks of the original release.

    Args:
        image_size: input size ``S``, one of 32, 64, 128.
        width: multiplier of every channel count (``nf = 64 w``, ``zdim = 256 w``, encoder
            ``nf = 32 w``, confidence ``zdim = 128 w``; rounded, at least 1).
        nf, zdim, encoder_nf, conf_zdim: explicit overrides of the scaled values.
        with_confidence: build ``netC`` (the synthetic-car setting has no confidence maps).
        depth_size: output resolution of ``netD`` (default ``image_size``; see :class:`EDDeconv`'s
            ``out_size``).
        background_size: ``r > 0`` adds the static background layer (an option of our own): ``netA``
            predicts a fourth channel (the canonical foreground alpha) and ``netB``, an :class:`Encoder`
            like ``netV``, an ``r x r`` RGB background (``B x 3 r^2``, tanh).
        view_width: channel multiplier of ``netV`` alone (an option of our own; default ``width``):
            ``netV``'s base width is ``32 view_width``.

    Returns:
        ``{"netD": EDDeconv (B x 3 x S x S -> B x 1 x S x S, linear),
        "netA": EDDeconv (-> B x 3 x S x S, tanh), "netL": Encoder (-> B x 4, tanh),
        "netV": Encoder (-> B x 6, tanh), "netC": ConfNet (-> B x 2 x S x S, B x 2 x S/4 x S/4)}``.
        At ``image_size=64, width=1`` the state dicts match the original checkpoints exactly.
    """
    _check_image_size(image_size)
    nf = nf if nf is not None else scaled_width(64, width)
    zdim = zdim if zdim is not None else scaled_width(256, width)
    encoder_nf = encoder_nf if encoder_nf is not None else scaled_width(32, width)
    conf_zdim = conf_zdim if conf_zdim is not None else scaled_width(128, width)
    nets: dict[str, nn.Module] = {
        "netD": EDDeconv(3, 1, zdim=zdim, nf=nf, activation=None, image_size=image_size, out_size=depth_size),
        "netA": EDDeconv(3, 4 if background_size else 3, zdim=zdim, nf=nf, activation=nn.Tanh, image_size=image_size),
        "netL": Encoder(3, 4, nf=encoder_nf, activation=nn.Tanh, image_size=image_size),
        "netV": Encoder(3, 6, nf=encoder_nf if view_width is None else scaled_width(32, view_width),
                        activation=nn.Tanh, image_size=image_size),
    }
    if with_confidence:
        nets["netC"] = ConfNet(3, 2, zdim=conf_zdim, nf=nf, image_size=image_size)
    if background_size:
        nets["netB"] = Encoder(3, 3 * int(background_size) ** 2, nf=encoder_nf, activation=nn.Tanh,
                               image_size=image_size)
    return nets
