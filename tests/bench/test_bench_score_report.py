"""Scoring runs (ceiling, floor, FID / FVD with stand-in networks, missing weights, bad runs) and the
report; the CLI end to end."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from bench_helpers import frozen

from magicmotion.bench.metrics import PSNR_CAP
from magicmotion.bench.report import report
from magicmotion.bench.runner import run_bench
from magicmotion.bench.score import read_scores, score_run
from magicmotion.data.dataset import read_index
from magicmotion.errors import BenchError


class TinyExtractor(torch.nn.Module):
    """Random features of uint8 images (N, 3, H, W) -> (N, 16) that keep where things are (2x2 grid)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        return 100 * self.pool(self.conv(x.float() / 255)).flatten(1)


class TinyI3D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        return 100 * self.proj(x.mean(dim=(2, 3, 4)))


@pytest.fixture(scope="module")
def frozen_run(bench_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "frozen"
    run_bench(bench_set, out, generate_fn=frozen, progress=False)
    return out


@pytest.mark.slow
def test_ground_truth_scores_above_a_frozen_model(bench_set, ground_truth_run, frozen_run, tmp_path):
    i3d = tmp_path / "i3d.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(TinyI3D()), str(i3d))
    gt = score_run(ground_truth_run, inception=TinyExtractor(), i3d=i3d, fvd_frames=4, progress=False)
    fr = score_run(frozen_run, inception=TinyExtractor(), i3d=i3d, fvd_frames=4, progress=False)
    assert gt == read_scores(ground_truth_run)
    records = read_index(bench_set)
    assert gt["overall"]["clips"] == len(records) == len(gt["clips"])
    # the classic tracker on the H.264 ground truth: measured Mask/Box IoU 0.817 / 0.820 (deterministic
    # synthetic set); the wrong variant is the frozen model below, measured 0.496 / 0.580
    assert gt["overall"]["mask_iou"] > 0.8 and gt["overall"]["box_iou"] > 0.8  # the classic ceiling
    # objects move a few pixels in 9 frames: a frozen video keeps some overlap, but clearly less
    assert fr["overall"]["mask_iou"] < gt["overall"]["mask_iou"] - 0.15
    assert fr["overall"]["box_iou"] < gt["overall"]["box_iou"] - 0.15
    # generated == ground truth: FID and FVD vanish (measured 0 and 7e-14: float64 rounding); a frozen
    # video is farther away (measured FID 2.09, FVD 0.084 with these tiny extractors)
    assert gt["overall"]["fid"] == pytest.approx(0.0, abs=1e-4)
    assert gt["overall"]["fvd"] == pytest.approx(0.0, abs=1e-4)
    assert fr["overall"]["fid"] > 0.5 and fr["overall"]["fvd"] > 0.02, (fr["overall"], gt["overall"])
    assert sorted(gt["buckets"]) == sorted({r["bucket"] for r in records})
    for label, b in gt["buckets"].items():
        clips = [c for c in gt["clips"] if c["bucket"] == label]
        assert b["clips"] == len(clips)
        assert b["mask_iou"] == pytest.approx(np.mean([c["mask_iou"] for c in clips]))
    c = gt["clips"][0]
    obj = next(iter(c["objects"].values()))
    assert len(obj["mask_frames"]) == 9 and obj["mask_frames"][0] is None
    assert c["mask_iou"] == pytest.approx(np.mean([o["mask_iou"] for o in c["objects"].values()]))
    assert gt["notes"] == []


def test_missing_weights_leave_iou_and_say_what_is_needed(ground_truth_run, tmp_path):
    s = score_run(ground_truth_run, inception=tmp_path / "no.pth", i3d=tmp_path / "no.pt", progress=False)
    assert s["overall"]["fid"] is None and s["overall"]["fvd"] is None
    assert s["overall"]["mask_iou"] > 0.8  # measured 0.817, as above
    assert any("FID not computed" in n and "--inception" in n for n in s["notes"])
    assert any("FVD not computed" in n and "i3d_torchscript.pt" in n and "--i3d" in n for n in s["notes"])


def test_score_bad_runs(bench_set, ground_truth_run, tmp_path):
    with pytest.raises(BenchError, match="not a benchmark run"):
        score_run(tmp_path, progress=False)
    run = tmp_path / "run"
    shutil.copytree(ground_truth_run, run)
    with pytest.raises(BenchError, match="unknown segmenter 'magic'"):
        score_run(run, segmenter="magic", progress=False)
    first = read_index(bench_set)[0]["id"]
    from magicmotion.io import read_video, write_video

    video, fps = read_video(run / "videos" / f"{first}.mp4")
    write_video(run / "videos" / f"{first}.mp4", video[:7], fps=fps)
    with pytest.raises(BenchError, match=rf"clip {first}: .* has 7 frames, the benchmark clip has 9"):
        score_run(run, progress=False)
    (run / "videos" / f"{first}.mp4").unlink()
    with pytest.raises(BenchError, match=rf"clip {first} has no video"):
        score_run(run, progress=False)


def test_report_table_chart_and_json(ground_truth_run, frozen_run, tmp_path):
    score_run(ground_truth_run, progress=False)
    score_run(frozen_run, progress=False)
    data = report([ground_truth_run, frozen_run], tmp_path / "rep", labels=["ground truth", "frozen"])
    md = (tmp_path / "rep" / "report.md").read_text()
    gt, fr = data["runs"]
    row = f"| ground truth | {gt['overall']['clips']} | – | – | {100 * gt['overall']['mask_iou']:.2f} | " \
          f"{100 * gt['overall']['box_iou']:.2f} |"
    assert row in md
    assert "| Run | Clips | FID ↓ | FVD ↓ | Mask IoU (%) ↑ | Box IoU (%) ↑ | Frame 0 PSNR (dB) ↑ | " \
           "Late background PSNR (dB) ↑ | Object colour error ↓ |" in md
    # the ground truth is its own file: every frame identical (the cap), every colour kept
    assert (gt["overall"]["frame0_psnr"], gt["overall"]["background_psnr"], gt["overall"]["colour_error"]) \
        == (PSNR_CAP, PSNR_CAP, 0.0)
    assert f"{100 * gt['overall']['box_iou']:.2f} | 100.00 | 100.00 | 0.00 |" in md
    # frozen on frame 0: frame 0 is the input again (through one more lossy encode: well above the
    # 30 dB of a visibly changed picture; measured 41.5), but the objects that moved leave their old place in the
    # late background and their true place shows the background's colour (measured 25.3 dB, 39)
    fo = fr["overall"]
    assert 30 < fo["frame0_psnr"] < PSNR_CAP, fo
    assert fo["background_psnr"] < fo["frame0_psnr"] - 5 and fo["colour_error"] > 10, fo
    scores = read_scores(frozen_run)
    for c in scores["clips"]:
        assert set(c) >= {"frame0_psnr", "background_psnr", "colour_error"}
    assert fo["colour_error"] == pytest.approx(np.mean([c["colour_error"] for c in scores["clips"]]))
    assert "### Mask IoU (%) ↑" in md and "| frozen |" in md
    assert "all runs: FVD not computed" in md  # the same note once, for both runs
    png = (tmp_path / "rep" / "by_objects.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["buckets"] == data["buckets"]
    with pytest.raises(BenchError, match="2 labels for 1 runs"):
        report([ground_truth_run], tmp_path / "x", labels=["a", "b"])
    with pytest.raises(BenchError, match="score the run first"):
        report([tmp_path], tmp_path / "y")


def test_cli_end_to_end(synth_dataset, tmp_path, capsys):
    from magicmotion.cli import main

    bench, run, rep = tmp_path / "bench", tmp_path / "gt", tmp_path / "rep"
    assert main(["bench", "build", str(synth_dataset), "--out", str(bench), "--per-bucket", "1",
                 "--frames", "9", "--buckets", "1,2,3+"]) == 0
    assert {r["bucket"] for r in read_index(bench)} == {"1", "2", "3+"}
    assert main(["bench", "run", str(bench), "--out", str(run), "--ground-truth", "--limit", "2"]) == 0
    capsys.readouterr()
    assert main(["bench", "score", str(run), "--segmenter", "classic"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("frame 0 dB late bg dB colour err")  # the ground truth: 100 / 100 / 0 below
    assert next(line for line in out if line.split()[0] == "all").split()[-3:] == ["100.00", "100.00", "0.00"]
    assert main(["bench", "report", str(run), "--out", str(rep)]) == 0
    assert (rep / "report.md").is_file()
    capsys.readouterr()
    assert main(["bench", "score", str(tmp_path)]) == 2
    assert "magicmotion: error:" in capsys.readouterr().err
