"""Evaluation: baselines on constructed cases, report contents, the W&B table of ``unsup3d-eval --wandb``."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unsup3d.data.synthetic import SyntheticConfig, generate_dataset
from unsup3d.evaluation import (
    METRIC_KEYS,
    PER_IMAGE_COLUMNS,
    average_train_depth,
    evaluate,
    format_report,
    write_report,
)
from unsup3d.metrics import SIDE_SCALE, evaluation_mask
from unsup3d.model import Unsup3D


def _dome(n: int, s: int = 32, seed: int = 0) -> torch.Tensor:
    """Domes of random height on a far background (max_depth 1.1): ``n x s x s``."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    r2 = (xx**2 + yy**2).expand(n, s, s)
    h = 0.05 + 0.05 * torch.rand(n, 1, 1, generator=g)
    return torch.where(r2 < 0.6, 1.05 - h * (1 - r2 / 0.6), torch.full_like(r2, 1.1))


def _loader(depth: torch.Tensor, batch: int = 3):
    images = torch.rand(depth.shape[0], 3, depth.shape[1], depth.shape[2], generator=torch.Generator().manual_seed(1))
    return [{"image": images[i:i + batch], "depth": depth[i:i + batch], "path": [f"im{j}.png" for j in
                                                                                 range(i, min(i + batch, len(depth)))]}
            for i in range(0, len(depth), batch)]


def test_average_train_depth_is_the_mean_map():
    d = _dome(7)
    avg = average_train_depth(_loader(d), max_images=None)
    assert torch.allclose(avg.float(), d.mean(0), atol=1e-6)
    avg5 = average_train_depth(_loader(d), max_images=5)
    assert torch.allclose(avg5.float(), d[:5].mean(0), atol=1e-6)


def test_baselines_on_a_constructed_case(tmp_path):
    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0)
    test = _dome(5, seed=3)
    # avg_gt baseline equal to every test map: zero error. Constant baseline: SIDE = std of log gt.
    same = test[:1].expand(5, -1, -1).clone()
    report = evaluate(model, _loader(same), avg_gt_depth=same[0], progress=False)
    assert report.num_images == 5
    assert report.scores["avg_gt"]["side"][0] < 1e-6 and report.scores["avg_gt"]["mad"][0] < 1e-3
    mask = evaluation_mask(same[:1], None, 1.1)
    logd = same[0][mask[0]].double().log()
    expected_side = math.sqrt(((logd - logd.mean()) ** 2).mean()) * SIDE_SCALE
    assert abs(report.scores["constant"]["side"][0] - expected_side) < 1e-4
    # Ratios are model / baseline.
    r = report.ratios["constant"]["side"]
    assert abs(r - report.scores["model"]["side"][0] / report.scores["constant"]["side"][0]) < 1e-9
    # Per-image rows: one per image and method (model, constant, avg_gt, prior_at_view), with every metric.
    assert list(report.scores) == ["model", "constant", "avg_gt", "prior_at_view"]
    assert len(report.rows) == 5 * 4 and set(METRIC_KEYS) <= set(report.rows[0])
    paths = write_report(report, tmp_path)
    assert paths["scores_json"].is_file() and "model/avg_gt" in format_report(report)
    lines = paths["per_image_csv"].read_text().splitlines()
    assert len(lines) == 1 + 20 and lines[1].startswith("im0.png,model,")


def test_prior_yardsticks_on_constructed_depth():
    """The prior rendered at the true view is the ground truth when the data is that prior: zero error;
    at the model's (wrong) predicted view it is scored exactly as the metric of that rendering."""
    from unsup3d.metrics import DepthMetrics

    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, depth_prior_height=0.3).eval()
    true = torch.tensor([[0.1, 0.3, 0.05, 0.0, 0.0, 0.0], [-0.1, -0.2, 0.0, 0.01, 0.0, 0.0],
                         [0.0, 0.5, -0.1, 0.0, -0.01, 0.0]])
    prior = model.shape_prior()
    assert prior.shape == (32, 32) and abs(float(prior.min()) - (model.core.border_depth - 0.3 * 0.2)) < 1e-3
    assert torch.all(prior[:, :2] == model.core.border_depth) and torch.all(prior[:, -2:] == model.core.border_depth)
    with torch.no_grad():
        gt = model.core.renderer.warp_canon_depth(prior.expand(3, -1, -1), true)
    gt = torch.where(model.core.renderer.visible_mask(gt), gt, torch.full_like(gt, 1.1)).clamp(0.9, 1.1)
    views = {str(Path(f"/data/im{i}.png").resolve()): true[i].tolist() for i in range(3)}
    loader = [{"image": torch.rand(3, 3, 32, 32), "depth": gt, "path": [f"/data/im{i}.png" for i in range(3)]}]
    report = evaluate(model, loader, progress=False, true_views=views)
    assert report.scores["prior_at_true_view"]["side"][0] < 1e-4
    assert report.scores["prior_at_true_view"]["mad"][0] < 0.05
    # prior_at_view: the same prior at the model's own view, scored by the same metric
    with torch.no_grad():
        f = model(loader[0]["image"])
        at_view = model.core.renderer.warp_canon_depth(prior.expand(3, -1, -1), f.view)
    metric = DepthMetrics(fov=model.hparams.fov, background_depth=1.1)
    metric.update(at_view, gt, model.core.renderer.visible_mask(at_view))
    assert abs(report.scores["prior_at_view"]["side"][0] - float(metric.compute()["side"]) * SIDE_SCALE) < 1e-6
    assert report.scores["prior_at_view"]["side"][0] > 0.1  # the untrained model's view is not the true one
    # pose statistics against the true views are in the report and the text table
    assert set(report.pose) >= {"pitch_slope", "yaw_slope", "roll_slope", "yaw_corr", "relief_ratio"}
    assert "yaw slope" in format_report(report)


def test_pose_statistics_hand_computed():
    from unsup3d.evaluation import pose_statistics

    true = torch.tensor([[0.0, -0.4, 0.1], [0.1, 0.0, -0.1], [0.2, 0.4, 0.0], [-0.1, 0.2, 0.2]], dtype=torch.float64)
    pred = torch.stack([true[:, 0] * 2 + 0.1, -true[:, 1], torch.zeros(4)], 1)
    stats = pose_statistics(pred, true)
    assert abs(stats["pitch_slope"] - 2) < 1e-9 and abs(stats["pitch_corr"] - 1) < 1e-9
    assert abs(stats["yaw_slope"] + 1) < 1e-9 and abs(stats["yaw_corr"] + 1) < 1e-9
    assert stats["roll_slope"] == 0 and math.isnan(stats["roll_corr"])  # a constant prediction: no correlation
    assert abs(stats["pitch_mean_deg"] - float(pred[:, 0].mean()) * 180 / math.pi) < 1e-9


def test_yardstick_verdict_names_the_prior():
    from unsup3d.evaluation import yardstick_verdict

    def mk(side, mad):
        return {"side": {"mean": side}, "mad_original": {"mean": mad}}

    base = {"constant": mk(1.2, 40.0), "avg_gt": mk(2.3, 30.0), "prior_at_true_view": mk(0.9, 24.0)}
    good = yardstick_verdict({"model": mk(0.7, 18.0), **base})
    assert "beats both baselines and the shape prior at the true view" in good
    bad = yardstick_verdict({"model": mk(1.0, 20.0), **base})
    assert "NOT" in bad and "SIDE vs prior_at_true_view" in bad and "MAD" not in bad.split("NOT beat")[1].split("(")[0]


def test_verdict_without_a_prior_names_what_the_model_does_not_beat():
    from unsup3d.evaluation import yardstick_verdict as baseline_verdict

    def mk(side, mad):
        return {"side": {"mean": side}, "mad_original": {"mean": mad}}

    good = baseline_verdict({"model": mk(1.0, 25.0), "constant": mk(1.2, 40.0), "avg_gt": mk(2.3, 30.0)})
    assert "beats both baselines on SIDE and MAD" in good and "NOT" not in good
    bad = baseline_verdict({"model": mk(1.3, 35.0), "constant": mk(1.2, 40.0), "avg_gt": mk(2.3, 30.0)})
    assert "NOT" in bad and "SIDE vs constant" in bad and "MAD vs avg_gt" in bad
    assert "MAD vs constant" not in bad and "SIDE vs avg_gt" not in bad


def test_eval_command_logs_scores_and_a_per_image_table_to_wandb(tiny, tmp_path):
    """``unsup3d-eval ... --wandb`` (the flag for ``wandb=true``), offline without an API key: the run holds the
    per-image scores as a wandb.Table with per_image.csv's columns and rows, and the scores in its summary."""
    exe = Path(sys.executable).parent / "unsup3d-eval"
    if not exe.exists():
        pytest.skip("unsup3d-eval is not installed beside the interpreter")
    _, ckpt = tiny
    generate_dataset(tmp_path / "data", 2, 2, 3, 0, SyntheticConfig(image_size=64, supersample=1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_SILENT="true")  # no API key, no ~/.netrc: offline
    out = tmp_path / "eval"
    proc = subprocess.run([str(exe), f"checkpoint={ckpt}", "dataset=synthetic", f"dataset.root={tmp_path / 'data'}",
                           "dataset.num_workers=0", f"hydra.run.dir={out}", "device=cpu", "--wandb"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (out / "wandb").glob("offline-run-*")
    (table_file,) = run.glob("files/media/table/eval/per_image_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == PER_IMAGE_COLUMNS
    csv_rows = (out / "per_image.csv").read_text().splitlines()[1:]
    methods = {"model", "constant", "avg_gt", "prior_at_view", "prior_at_true_view"}  # the data records its views
    assert len(table["data"]) == len(csv_rows) == 3 * len(methods)
    assert {row[1] for row in table["data"]} == methods
    # the summary: an offline run keeps it only in its run-*.wandb record file, where each key is stored
    # next to its value's JSON
    scores = json.loads((out / "scores.json").read_text())
    (records,) = run.glob("run-*.wandb")
    data = records.read_bytes()
    for key, value in (("scores/model/side/mean", scores["scores"]["model"]["side"]["mean"]),
                       ("ratios/avg_gt/mad", scores["ratios"]["avg_gt"]["mad"]), ("num_images", 3)):
        at = data.find(key.encode())
        assert at >= 0 and json.dumps(value).encode() in data[at : at + len(key) + 40], key


def test_trainer_test_path_gives_the_same_report_as_evaluate(tmp_path):
    """unsup3d-eval's path (trainer.test -> Unsup3D.test_step -> DepthEvaluator) and evaluate() (the learning
    curve's) are one computation: the same scores, rows and pose statistics, and max_images is respected."""
    from unsup3d.evaluation import trainer_evaluate

    torch.manual_seed(0)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, depth_prior_height=0.3)
    depth = _dome(7, seed=2)
    images = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    paths = [f"/data/im{i}.png" for i in range(7)]
    views = {str(Path(p).resolve()): [0.02 * i, -0.05 * i, 0.0, 0.0, 0.0, 0.0] for i, p in enumerate(paths)}

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return {"image": images[i], "depth": depth[i], "path": paths[i]}

    loader = torch.utils.data.DataLoader(Items(), batch_size=3)
    avg = depth.mean(0)
    a = evaluate(model, loader, avg_gt_depth=avg, progress=False, true_views=views, max_images=5)
    b = trainer_evaluate(model, loader, avg_gt_depth=avg, progress=False, true_views=views, max_images=5,
                   image_dir=tmp_path / "images")
    assert model.training and model.test_evaluator is None  # mode and state given back
    assert a.num_images == b.num_images == 5 and list(a.scores) == list(b.scores)
    assert list(a.scores) == ["model", "constant", "avg_gt", "prior_at_view", "prior_at_true_view"]
    for m in a.scores:
        for k in METRIC_KEYS:
            assert a.scores[m][k][0] == pytest.approx(b.scores[m][k][0], rel=1e-5, abs=1e-7), (m, k)
    assert a.pose == pytest.approx(b.pose, rel=1e-5, nan_ok=True)
    assert [r["path"] for r in a.rows] == [r["path"] for r in b.rows]
    assert len(list((tmp_path / "images").iterdir())) == 5


def test_foreground_alpha_is_the_rendered_alpha_over_the_true_foreground():
    """With a background layer, the report gives the mean of the canonical alpha rendered at the predicted
    view over the evaluation mask; a constant alpha gives that constant, a model without the layer none."""
    from unsup3d.evaluator import DepthEvaluator

    torch.manual_seed(0)
    gt = _dome(3)
    for background_size, alpha in ((4, 0.25), (4, 0.9), (0, None)):
        model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0, background_size=background_size).eval()
        ev = DepthEvaluator(model.core)
        with torch.no_grad():
            f = model.core(torch.rand(3, 3, 32, 32) * 2 - 1)
            if alpha is not None:
                assert f.canon_alpha is not None and f.canon_alpha.shape == (3, 1, 32, 32)
                f.canon_alpha = torch.full_like(f.canon_alpha, alpha)
            ev.update(model.core, f, gt)
        report = ev.report()
        if alpha is None:
            assert "foreground_alpha" not in report.pose
        else:
            assert abs(report.pose["foreground_alpha"] - alpha) < 1e-5
            assert f"foreground alpha {alpha:.2f}" in format_report(report)


def test_tilt_figures_split_the_model_side_into_plane_and_shape():
    """The report's side_untilted / tilt_share / lean_deg: the model's depth replaced by the truth leaned
    back by a known angle is all plane (share 1, nothing left, the lean recovered in degrees); the truth
    itself has no error at all to split."""
    import math

    from unsup3d.evaluator import DepthEvaluator

    torch.manual_seed(0)
    gt = _dome(3)
    model = Unsup3D(image_size=32, width=0.125, lam_perc=0.0).eval()
    s = gt.shape[-1]
    y = torch.linspace(-1, 1, s).view(1, s, 1)
    lean = 4.0  # degrees: log-depth slope per unit of normalised y = tan(lean) * tan(fov / 2)
    slope = math.tan(math.radians(lean)) * math.tan(math.radians(model.core.fov) / 2)
    ev = DepthEvaluator(model.core)
    with torch.no_grad():
        f = model.core(torch.rand(3, 3, s, s) * 2 - 1)
        f.recon_depth = gt * (slope * y).exp()
        ev.update(model.core, f, gt)
    p = ev.report().pose
    assert p["side_untilted"] < 1e-4 and p["tilt_share"] == pytest.approx(1.0, abs=1e-4)
    assert p["lean_deg"] == pytest.approx(lean, rel=1e-3)
    assert "mean lean of the error +4.0 deg" in format_report(ev.report())
