"""Training-step benchmark: a full step of the original configuration against its networks alone.

    python scripts/bench_train.py [--batch 64] [--size 64] [--width 1.0] [--repeats 2] [--device cpu]

Times, in the same run and on the same inputs:
  1. a full training step: forward (five networks, renderer, shading, grid_sample), all losses
     (confidence-weighted L1 and perceptual with VGG16 relu3_3), backward, Adam step;
  2. the networks alone: the five networks' forward, the VGG16 passes the perceptual loss makes
     (twice 2B images: original and flipped reconstruction with the input), backward, Adam step.
Prints both and the overhead ratio (1 - networks / full). Target (issue 3): overhead <= 10% on CPU.
VGG weights are random if no ImageNet weights are available (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import warnings

import torch

from unsup3d.benchmark import time_runs
from unsup3d.model import Unsup3D


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-perceptual", action="store_true", help="lam_perc=0 (no VGG)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compare-bf16", action="store_true",
                    help="also time the full step under bf16 autocast (trainer.precision=bf16-mixed: networks "
                         "in bf16, geometry in fp32) and print the renderer's largest difference to fp32")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Unsup3D(image_size=args.size, width=args.width, lam_perc=0.0 if args.no_perceptual else 1.0,
                        allow_random_vgg=True).to(device)
        if not args.no_perceptual:
            model._perceptual_loss()
    model.train()
    opt = model.configure_optimizers()
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {args.size}x{args.size}, width {args.width}, "
          f"perceptual {'off' if args.no_perceptual else 'on'}")

    def full_step():
        opt.zero_grad(set_to_none=True)
        losses = model.compute_losses(model(x), epoch=0)
        losses["total"].backward()
        opt.step()

    vgg = None if model.perceptual is None else model.perceptual

    def networks_step():
        opt.zero_grad(set_to_none=True)
        xi = x * 2 - 1
        outs = [model.netD(xi), model.netA(xi), model.netL(xi), model.netV(xi)]
        if model.netC is not None:
            outs.extend(model.netC(xi))
        total = sum(o.float().mean() for o in outs)
        if vgg is not None:
            # The perceptual loss runs VGG on cat([reconstruction, input]) for the original and the
            # flipped reconstruction; the reconstruction depends on the networks, so the backward
            # pass goes through VGG to its input.
            recon = outs[1]
            for _ in range(2):
                total = total + vgg.vgg(vgg.normalize(torch.cat([recon, xi], 0))).mean()
        total.backward()
        opt.step()

    def bf16_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = model.compute_losses(model(x), epoch=0)
        losses["total"].backward()
        opt.step()

    t_full = time_runs(full_step, args.repeats, device)
    t_nets = time_runs(networks_step, args.repeats, device)
    full, nets = statistics.median(t_full), statistics.median(t_nets)
    overhead = 1 - nets / full
    print(f"full training step:              {full:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in t_full)})")
    print(f"networks (+VGG) fwd+bwd+step:    {nets:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in t_nets)})")
    print(f"everything else (renderer, shading, sampling, losses): {full - nets:.3f} s")
    print(f"overhead_ratio={overhead:.3f} (target <= 0.10: {'PASS' if overhead <= 0.10 else 'FAIL'})")
    if args.compare_bf16:
        t_bf16 = statistics.median(time_runs(bf16_step, args.repeats, device))
        with torch.no_grad():
            xi = x * 2 - 1
            with torch.autocast(device.type, dtype=torch.bfloat16):
                raw = model.predict(xi)
                f_auto = model.render_factors(xi, raw)
            f_fp32 = model.render_factors(xi, raw)  # the same network outputs, geometry outside autocast
        diff = max((getattr(f_auto, k) - getattr(f_fp32, k)).abs().max().item()
                   for k in ("recon_depth", "recon_image", "recon_image_flip", "canon_normal"))
        print(f"full step under bf16 autocast:   {t_bf16:8.3f} s  (fp32 / bf16 = {full / t_bf16:.2f}x)")
        print(f"bf16_speedup={full / t_bf16:.2f} max_renderer_diff_bf16_vs_fp32={diff:.2e}")


if __name__ == "__main__":
    main()
