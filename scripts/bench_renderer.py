"""Renderer benchmark: the reconstruction path of a training step against a convolution, in one run.

    python scripts/bench_renderer.py [--batch 128] [--size 64] [--threads N] [--device cpu]

Times, on the same machine in the same run (median of `--repeats`):
  * reference: one 3x3 convolution 64 -> 64 channels on 64x64 maps at batch 16, forward + backward
    (14.5 GFLOP);
  * the renderer: `warp_canon_depth` + `inverse_warp_grid` + `grid_sample` of a 3-channel canonical
    image, forward + backward, at batch `--batch` (128: the 2 x 64 images of a training step of the
    original recipe), on smooth depth maps seen from views drawn like the model's;
  * `render_view` (no gradients, as for turntables and exports).
Prints `renderer_to_conv_ratio=<renderer / reference>`. Target (issue 12): <= 1.5.
With PyTorch3D installed, the same workload also runs on `backend=pytorch3d`, and the two rasterizers'
fragments are compared (pix_to_face agreement, zbuf and barycentric differences).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from unsup3d.benchmark import time_runs
from unsup3d.fused import set_auto_compile
from unsup3d.renderer import Renderer
from unsup3d.renderer.pytorch3d_backend import is_available as p3d_available

TARGET = 1.5


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


def reference_workload(device, size: int = 64, batch: int = 16):
    """Forward + backward of one 3x3 convolution 64 -> 64 on ``batch`` maps of ``size`` x ``size``."""
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).to(device)
    x = torch.randn(batch, 64, size, size, device=device, requires_grad=True)
    flops = 3 * 2 * 64 * 64 * 9 * size * size * batch  # forward, and 2x for the input and weight gradients

    def run():
        conv.zero_grad(set_to_none=True)
        x.grad = None
        conv(x).square().mean().backward()

    return run, flops


def renderer_workload(r: Renderer, batch: int, size: int, device):
    """warp_canon_depth + inverse_warp_grid + grid_sample, forward + backward, as in a training step."""
    d, v = realistic_inputs(batch, size, device)
    d.requires_grad_(True)
    v.requires_grad_(True)
    tex = torch.rand(batch, 3, size, size, device=device, requires_grad=True)

    def run():
        d.grad = v.grad = tex.grad = None
        recon_depth = r.warp_canon_depth(d, v)
        grid = r.inverse_warp_grid(recon_depth, v)
        im = F.grid_sample(tex, grid, mode="bilinear", align_corners=True)
        (im.square().mean() + recon_depth.square().mean()).backward()

    return run


def compare_backends(size: int, batch: int, device) -> None:
    """Fragments of the built-in rasterizer against PyTorch3D's on the benchmark inputs."""
    a_r, b_r = Renderer(image_size=size), Renderer(image_size=size, backend="pytorch3d")
    d, v = realistic_inputs(batch, size, device, seed=1)
    with torch.no_grad():
        a, b = a_r.rasterize_view(d, v), b_r.rasterize_view(d, v)
    both = a.mask & b.mask
    agree = (a.pix_to_face == b.pix_to_face).float().mean().item()
    only_a, only_b = (a.mask & ~b.mask).sum().item(), (b.mask & ~a.mask).sum().item()
    same = both & (a.pix_to_face == b.pix_to_face)
    other = both & (a.pix_to_face != b.pix_to_face)
    dz_same = (a.zbuf - b.zbuf)[same].abs().max().item()
    dz_other = (a.zbuf - b.zbuf)[other].abs().max().item() if other.any() else 0.0
    dbary = (a.bary_coords - b.bary_coords)[same].abs().max().item()
    print(f"pytorch3d vs built-in, B={batch} {size}x{size}: pix_to_face equal on {100 * agree:.4f}% of "
          f"{a.mask.numel()} pixels; covered only by built-in {only_a}, only by pytorch3d {only_b}; where the "
          f"same face wins: max |zbuf diff| {dz_same:.2e}, max |bary diff| {dbary:.2e}; where another face wins "
          f"({other.sum().item()} pixels): max |zbuf diff| {dz_other:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--render-batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--render-size", type=int, default=64, help="output size of render_view")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true",
                    help="bf16-mixed: both workloads under bf16 autocast (the conv runs in bf16, the "
                         "renderer's geometry stays fp32 as in training)")
    args = ap.parse_args()
    set_auto_compile(True)  # the compiled kernels, as in a training run (unsup3d.fused)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"precision {args.precision}")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
        run(args, device)


def run(args: argparse.Namespace, device: torch.device) -> None:
    ref_fn, ref_flops = reference_workload(device, args.size)
    t_ref = statistics.median(time_runs(ref_fn, args.repeats, device))
    print(f"reference: conv3x3 64->64, B=16, {args.size}x{args.size}, fwd+bwd: {t_ref * 1e3:8.1f} ms "
          f"({ref_flops / 1e9:.1f} GFLOP, {ref_flops / t_ref / 1e9:.0f} GFLOP/s)")

    backends = ["torch"] + (["pytorch3d"] if p3d_available() else [])
    ratio = math.nan
    for backend in backends:
        r = Renderer(image_size=args.size, backend=backend)
        t = statistics.median(time_runs(renderer_workload(r, args.batch, args.size, device), args.repeats, device))
        dd, vv = realistic_inputs(args.render_batch, args.size, device)
        tex = torch.rand(args.render_batch, 3, args.size, args.size, device=device)

        def render():
            with torch.no_grad():
                r.render_view(tex, dd, vv, image_size=args.render_size)

        t_render = statistics.median(time_runs(render, args.repeats, device))
        print(f"[{backend}] warp + inverse warp + grid_sample fwd+bwd, B={args.batch}: {t * 1e3:8.1f} ms "
              f"= {t / t_ref:.2f}x the reference")
        print(f"[{backend}] render_view B={args.render_batch} -> {args.render_size}x{args.render_size}: "
              f"{t_render * 1e3:8.1f} ms")
        if backend == "torch":
            ratio = t / t_ref
    if "pytorch3d" in backends:
        compare_backends(args.size, args.batch, device)
    print(f"renderer_to_conv_ratio={ratio:.2f} (target <= {TARGET}: {'PASS' if ratio <= TARGET else 'FAIL'})")


if __name__ == "__main__":
    main()
