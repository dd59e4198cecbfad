"""Training-step benchmark: a full step against its networks alone, the networks against the machine's
GEMM peak, bf16 against fp32, and the slowdown beside a busy process, all in one run.

    python scripts/bench_train.py [--batch 64] [--width 1.0] [--no-perceptual] [--repeats 3]
                                  [--threads N] [--compare-bf16] [--contend {none,loop,torch}]
                                  [--channels-last] [--compile]

Times, in the same run and on the same inputs (median of ``--repeats``):
  1. a full training step: forward (five networks, renderer, shading, grid_sample), all losses,
     backward, Adam step;
  2. the networks alone: the five networks' forward (and the VGG16 passes of the perceptual loss),
     backward, Adam step;
and, timed directly, everything beyond the networks (their outputs given as leaf tensors: decoding,
shading, warps, rasterization, grid_sample, losses, and the backward pass to those outputs), whose
share of the full step is printed as ``overhead_ratio``. Targets (issue 12):
<= 0.15 at the synthetic_cpu step (``--batch 32 --width 0.25 --no-perceptual``), <= 0.03 at full width
with the perceptual loss.
Also printed: the networks' achieved GFLOP/s (forward + backward FLOPs counted by torch's FLOP counter)
against a large fp32 GEMM (and bf16 where the CPU has it) timed in the same run (target: >= 40 % at full
width, batch 64); ``--compare-bf16``: the full step under bf16 autocast (``trainer.precision=bf16-mixed``:
networks in bf16, geometry in fp32) and the renderer's largest difference to fp32; ``--contend loop``
(a single-threaded busy loop) or ``--contend torch`` (a multi-threaded torch matmul job): the full step
with that process beside it at torch's default thread count and with ``threads=auto`` (the training
default: :class:`unsup3d.training.threads.ThreadTuner` picks the count by timing the steps), and the
slowdown ratios against the idle step (targets for the default: <= 2.5 and <= 4 on a 2-core machine).
For the precision the synthetic_cpu recipe trains in on this machine (``--precision auto``: bf16-mixed
where the CPU computes bf16 natively, else 32-true), ``step_to_limit=`` is that step's time over the
networks' fwd+bwd FLOPs at that precision's GEMM peak measured in the same run (target <= 4), and
``overhead_ratio_bf16=`` everything beyond the networks as a share of the bf16 step (target <= 0.15).
VGG weights are random when no ImageNet weights are available (timing does not depend on them).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
import warnings

import torch

from unsup3d.benchmark import time_runs
from unsup3d.config import native_cpu_precision
from unsup3d.fused import set_auto_compile
from unsup3d.model import Unsup3D
from unsup3d.training.threads import ThreadTuner


def _busy_loop(stop) -> None:  # a single-threaded CPU-bound process
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _torch_job(stop) -> None:  # a multi-threaded torch job
    torch.set_num_threads(os.cpu_count() or 2)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a * 1e-3)


def gemm_peak(dtype: torch.dtype, device, n: int = 1024, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an ``n x n`` matrix product in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t = statistics.median(time_runs(lambda: a @ b, repeats, device))
    return 2 * n**3 / t / 1e9


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-perceptual", action="store_true", help="lam_perc=0 (no VGG)")
    ap.add_argument("--background-size", type=int, default=0,
                    help="model.background_size (synthetic_cpu: 2, its static background layer)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compare-bf16", action="store_true", help="also time the step under bf16 autocast")
    ap.add_argument("--contend", choices=["none", "loop", "torch"], default="none",
                    help="also time the step beside a busy process")
    ap.add_argument("--channels-last", action="store_true", help="networks and input in channels_last")
    ap.add_argument("--compile", action="store_true", help="torch.compile the five networks")
    ap.add_argument("--precision", choices=["auto", "32-true", "bf16-mixed"], default="auto",
                    help="precision of step_to_limit (auto: the synthetic_cpu recipe's on this machine, "
                         "bf16-mixed where the CPU computes bf16 natively, else 32-true)")
    args = ap.parse_args()
    set_auto_compile(True)  # the compiled kernels, as in a training run (unsup3d.fused)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Unsup3D(image_size=args.size, width=args.width, lam_perc=0.0 if args.no_perceptual else 1.0,
                        background_size=args.background_size, allow_random_vgg=True).to(device)
        if not args.no_perceptual:
            model._perceptual_loss()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    core = model.core
    for name in core.network_names:
        getattr(core, name).to(memory_format=fmt)
        if args.compile:
            setattr(core, name, torch.compile(getattr(core, name)))
    model.train()
    opt = model.configure_optimizers()
    x = torch.rand(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, {args.size}x{args.size}, width {args.width}, "
          f"perceptual {'off' if args.no_perceptual else 'on'}, channels_last {args.channels_last}, "
          f"compile {args.compile}")

    def full_step():
        opt.zero_grad(set_to_none=True)
        losses = model.compute_losses(model(x), epoch=0)
        losses["total"].backward()
        opt.step()

    vgg = model.perceptual

    def networks_forward_backward():
        xi = x * 2 - 1
        outs = [core.netD(xi), core.netA(xi), core.netL(xi), core.netV(xi)]
        if core.netC is not None:
            outs.extend(core.netC(xi))
        if core.netB is not None:
            outs.append(core.netB(xi))
        total = sum(o.float().mean() for o in outs)
        if vgg is not None:
            # The perceptual loss runs VGG on cat([reconstruction, input]) for the original and the
            # flipped reconstruction; the backward pass goes through VGG to the reconstruction.
            recon = outs[1]
            for _ in range(2):
                total = total + vgg.vgg(vgg.normalize(torch.cat([recon, xi], 0))).mean()
        total.backward()

    def networks_step():
        opt.zero_grad(set_to_none=True)
        networks_forward_backward()
        opt.step()

    # Everything beyond the networks, timed directly: the networks' outputs as leaf tensors, then the
    # decoding, shading, warps, rasterization, grid_sample and the losses (the perceptual term's VGG is a
    # network and is left out), and their backward pass down to those outputs.
    with torch.no_grad():
        raw_ref = core.predict(x * 2 - 1)

    def leaf(t):
        return t.detach().clone().requires_grad_(True)

    def rest_step():
        raw = {k: (None if v is None else tuple(leaf(t) for t in v) if isinstance(v, tuple) else leaf(v))
               for k, v in raw_ref.items()}
        f = core.render_factors(x * 2 - 1, raw)
        lam_perc = model.hparams.lam_perc
        model.hparams.lam_perc = 0.0
        try:
            losses = model.compute_losses(f, epoch=0)
        finally:
            model.hparams.lam_perc = lam_perc
        losses["total"].backward()

    def bf16_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = model.compute_losses(model(x), epoch=0)
        losses["total"].backward()
        opt.step()

    def bf16_rest_step():  # everything beyond the networks, in the bf16 step (geometry stays fp32 inside)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            rest_step()

    t_full = time_runs(full_step, args.repeats, device)
    t_nets = time_runs(networks_step, args.repeats, device)
    t_rest = time_runs(rest_step, args.repeats, device)
    full, nets, rest = statistics.median(t_full), statistics.median(t_nets), statistics.median(t_rest)
    overhead = rest / full
    print(f"full training step:              {full:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in t_full)})")
    print(f"networks fwd+bwd+step:           {nets:8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in t_nets)})")
    print(f"everything else (renderer, shading, sampling, losses; fwd+bwd): {rest:.3f} s  "
          f"(runs: {', '.join(f'{t:.3f}' for t in t_rest)})")
    flops = count_flops(networks_forward_backward)
    opt.zero_grad(set_to_none=True)
    achieved = flops / nets / 1e9
    native = "bf16-mixed" if device.type == "cuda" else native_cpu_precision()
    precision = native if args.precision == "auto" else args.precision
    peak32 = gemm_peak(torch.float32, device)
    peak16 = gemm_peak(torch.bfloat16, device) if "bf16-mixed" in (native, precision) else None
    line = (f"networks: {flops / 1e9:.1f} GFLOP fwd+bwd, {achieved:.0f} GFLOP/s; fp32 GEMM peak {peak32:.0f} GFLOP/s "
            f"-> {100 * achieved / peak32:.0f} % of peak")
    if peak16 is not None:
        line += f"; bf16 GEMM {peak16:.0f} GFLOP/s"
    print(line)
    print(f"overhead_ratio={overhead:.3f} networks_gflops={achieved:.0f} peak_fraction={achieved / peak32:.2f}")
    run_bf16 = args.compare_bf16 or precision == "bf16-mixed"
    if run_bf16:
        t_bf16 = statistics.median(time_runs(bf16_step, args.repeats, device))
        t_rest16 = statistics.median(time_runs(bf16_rest_step, args.repeats, device))
        with torch.no_grad():
            xi = x * 2 - 1
            with torch.autocast(device.type, dtype=torch.bfloat16):
                raw = core.predict(xi)
                f_auto = core.render_factors(xi, raw)
            f_fp32 = core.render_factors(xi, raw)  # the same network outputs, geometry outside autocast
        diff = max((getattr(f_auto, k) - getattr(f_fp32, k)).abs().max().item()
                   for k in ("recon_depth", "recon_image", "recon_image_flip", "canon_normal"))
        print(f"full step under bf16 autocast:   {t_bf16:8.3f} s  (fp32 / bf16 = {full / t_bf16:.2f}x); "
              f"everything else {t_rest16:.3f} s")
        print(f"bf16_speedup={full / t_bf16:.2f} max_renderer_diff_bf16_vs_fp32={diff:.2e} "
              f"overhead_ratio_bf16={t_rest16 / t_bf16:.3f} (target <= 0.15)")
    # step_to_limit: the step of the recipe's precision against the networks' FLOPs at that precision's
    # GEMM peak, both measured in this run (the networks' FLOPs are the whole step's but for a few %).
    step, peak = (t_bf16, peak16) if precision == "bf16-mixed" else (full, peak32)
    limit = flops / (peak * 1e9)
    print(f"precision {precision}: step {step:.3f} s, limit {limit * 1e3:.1f} ms "
          f"({flops / 1e9:.1f} GFLOP at {peak:.0f} GFLOP/s)")
    print(f"step_to_limit={step / limit:.2f} (target <= 4) precision={precision}")
    if args.contend != "none":
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        proc = ctx.Process(target=_busy_loop if args.contend == "loop" else _torch_job, args=(stop,), daemon=True)
        proc.start()
        time.sleep(2.0)
        threads = torch.get_num_threads()
        try:
            t_fixed = statistics.median(time_runs(full_step, args.repeats, device))
            # The default command (threads=auto): the tuner times the candidate thread counts on these
            # steps, then the step is timed at the count it chose.
            tuner = ThreadTuner()
            while tuner.probing:
                t0 = time.perf_counter()
                full_step()
                tuner.step_done(time.perf_counter() - t0)
            t_busy = statistics.median(time_runs(full_step, args.repeats, device))
        finally:
            stop.set()
            proc.join(10)
            torch.set_num_threads(threads)
        what = "busy loop" if args.contend == "loop" else "multi-threaded torch job"
        print(f"full step beside a {what}: {t_fixed:8.3f} s at {threads} threads, {t_busy:8.3f} s with "
              f"threads=auto (chose {tuner.threads}; probed "
              + ", ".join(f"{n}: {t:.3f} s" for n, t in tuner.history) + ")")
        print(f"contention_slowdown={t_busy / full:.2f} (target <= {2.5 if args.contend == 'loop' else 4.0}) "
              f"contention_slowdown_fixed_threads={t_fixed / full:.2f}")

if __name__ == "__main__":
    main()
