"""Renderer benchmark (CPU by default): warp_canon_depth forward+backward and render_view, with a
reference convolutional workload of known FLOPs timed in the same run.

    python scripts/bench_renderer.py [--batch 128] [--size 64] [--threads N] [--device cpu]

Target (issue 2): warp_canon_depth fwd+bwd at B=128, 64x64 under 0.5 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from unsup3d.benchmark import time_runs
from unsup3d.renderer import Renderer
from unsup3d.renderer.pytorch3d_backend import is_available as p3d_available


def realistic_inputs(batch: int, size: int, device, seed: int = 0):
    """Smooth canonical depth maps in [0.9, 1.1] with the model's 2-px border, and views drawn
    like the model's (rotations within +-60 degrees, mostly yaw; small translations)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 1, 6, 6, generator=g)
    d = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=True)[:, 0]
    d = 0.9 + 0.2 * (d - d.amin()) / (d.amax() - d.amin())
    d[:, :, :2] = d[:, :, -2:] = 1.04
    rot = (torch.rand(batch, 3, generator=g) * 2 - 1) * torch.tensor([20.0, 60.0, 15.0]) * math.pi / 180
    trans = (torch.rand(batch, 3, generator=g) * 2 - 1) * torch.tensor([0.1, 0.1, 0.0])
    return d.to(device), torch.cat([rot, trans], 1).to(device)


def reference_workload(device, size: int):
    """Forward+backward of 4 conv3x3 layers at 64 channels on a batch of 8 64x64 maps."""
    layers = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)]).to(device)
    x = torch.randn(8, 64, size, size, device=device)
    flops = 3 * 4 * 2 * 64 * 64 * 9 * size * size * 8  # fwd + 2x for bwd (input and weight grads)

    def run():
        layers.zero_grad(set_to_none=True)
        layers(x).square().mean().backward()

    return run, flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--render-batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--render-size", type=int, default=64, help="output size of render_view")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")

    ref_fn, ref_flops = reference_workload(device, args.size)
    t_ref = statistics.median(time_runs(ref_fn, args.repeats, device))
    print(f"reference conv workload fwd+bwd: {t_ref * 1e3:8.1f} ms ({ref_flops / t_ref / 1e9:.1f} GFLOP/s)")

    backends = ["torch"] + (["pytorch3d"] if p3d_available() else [])
    for backend in backends:
        r = Renderer(image_size=args.size, backend=backend)
        d, v = realistic_inputs(args.batch, args.size, device)
        d.requires_grad_(True)
        v.requires_grad_(True)

        def warp():
            d.grad = v.grad = None
            r.warp_canon_depth(d, v).square().mean().backward()

        t_warp = statistics.median(time_runs(warp, args.repeats, device))
        tex = torch.rand(args.render_batch, 3, args.size, args.size, device=device)
        dd, vv = d.detach()[: args.render_batch], v.detach()[: args.render_batch]

        def render():
            with torch.no_grad():
                r.render_view(tex, dd, vv, image_size=args.render_size)

        t_render = statistics.median(time_runs(render, args.repeats, device))
        print(f"[{backend}] warp_canon_depth fwd+bwd B={args.batch} {args.size}x{args.size}: "
              f"{t_warp:.3f} s  ratio to reference {t_warp / t_ref:.2f}  "
              f"(target < 0.5 s: {'PASS' if t_warp < 0.5 else 'FAIL'})")
        print(f"[{backend}] render_view B={args.render_batch} -> {args.render_size}x{args.render_size}: "
              f"{t_render:.3f} s  ratio to reference {t_render / t_ref:.2f}")


if __name__ == "__main__":
    main()
