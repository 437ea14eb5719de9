"""Benchmark runs: resume after a kill, ground-truth runs, bad generators and settings, and one run of
a real (tiny, random) MagicMotion pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bench_helpers import frozen, recording

from magicmotion.bench.runner import condition_trajectory, read_run, run_bench
from magicmotion.data.dataset import read_index
from magicmotion.data.reader import Dataset
from magicmotion.errors import BenchError


class Killed(RuntimeError):
    pass


def test_resume_after_a_simulated_kill(bench_set, tmp_path):
    calls = []

    def dies_on_third(clip, trajectory):
        calls.append(clip.id)
        if len(calls) == 3:
            raise Killed(clip.id)
        return frozen(clip, trajectory)

    out = tmp_path / "run"
    with pytest.raises(Killed):
        run_bench(bench_set, out, generate_fn=dies_on_third, progress=False)
    ids = [r["id"] for r in read_index(bench_set)]
    done = sorted(p.stem for p in (out / "videos").glob("*.mp4"))
    assert done == sorted(ids[:2])  # the clip in flight is lost, nothing else
    assert not [p for p in (out / "videos").iterdir() if p.name.startswith(".")]
    first_two = {i: (out / "videos" / f"{i}.mp4").stat().st_mtime_ns for i in ids[:2]}

    calls.clear()
    s = run_bench(bench_set, out, generate_fn=recording(calls), progress=False)
    assert calls == ids[2:]  # clips 1-2 are not generated again
    assert s == {"out": str(out), "clips": len(ids), "generated": len(ids) - 2, "skipped": 2}
    assert {i: (out / "videos" / f"{i}.mp4").stat().st_mtime_ns for i in ids[:2]} == first_two
    info = read_run(out)
    assert info["complete"] and info["clips"] == ids and info["settings"]["generator"] == "custom"


def test_run_leftover_temp_files_are_removed(bench_set, tmp_path):
    out = tmp_path / "run"
    (out / "videos").mkdir(parents=True)
    debris = out / "videos" / ".clip.abc123.tmp.mp4"
    debris.write_bytes(b"half a video")
    run_bench(bench_set, out, generate_fn=frozen, limit=1, progress=False)
    assert not debris.exists()


def test_ground_truth_run_copies_the_clips(bench_set, ground_truth_run):
    records = read_index(bench_set)
    for r in records:
        assert (ground_truth_run / "videos" / f"{r['id']}.mp4").read_bytes() == (bench_set / r["video"]).read_bytes()
    assert read_run(ground_truth_run)["settings"] == {"ground_truth": True, "size": None}


def test_run_refuses_other_settings_and_bad_generators(bench_set, tmp_path):
    out = tmp_path / "run"
    run_bench(bench_set, out, generate_fn=frozen, limit=1, control_scale=1.0, progress=False)
    with pytest.raises(BenchError, match="control_scale: 1.0 now 0.0"):
        run_bench(bench_set, out, generate_fn=frozen, limit=1, control_scale=0.0, progress=False)
    with pytest.raises(BenchError, match=r"returned 8 frames, the benchmark clip has 9"):
        run_bench(bench_set, tmp_path / "short", generate_fn=lambda c, t: c.frames[:8], progress=False)
    with pytest.raises(BenchError, match=r"expected uint8 \(T, H, W, 3\)"):
        run_bench(bench_set, tmp_path / "float", generate_fn=lambda c, t: c.frames / 255.0, progress=False)
    with pytest.raises(BenchError, match="not a benchmark set"):
        run_bench(tmp_path, tmp_path / "x", generate_fn=frozen, progress=False)
    with pytest.raises(BenchError, match="unknown kind 'boxes'"):
        run_bench(bench_set, tmp_path / "y", kind="boxes", generate_fn=frozen, progress=False)
    with pytest.raises(BenchError, match="not a benchmark run"):
        read_run(tmp_path)


def test_condition_trajectory_by_kind(bench_set):
    traj = Dataset(bench_set)[0].trajectory
    assert condition_trajectory(traj, "box") is traj
    sparse = condition_trajectory(traj, "sparse_box", sparse_keys=2)
    for o in sparse.objects:
        assert sorted(o.masks) == [0]
        assert set(o.boxes) <= {0, 4, 8} and 8 in o.boxes


@pytest.mark.slow
def test_run_with_the_tiny_pipeline(tmp_path):
    """A real MagicMotion Wan pipeline (tiny random components built in code) on a 5-frame 32x32
    benchmark clip; the video, preview and settings are written."""
    from magicmotion.bench.sets import build_bench
    from magicmotion.data.synthetic import synthesize
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.pipeline_wan import MagicMotionWanPipeline
    from magicmotion.pipelines.tiny import tiny_wan_components

    synthesize(tmp_path / "ds", 2, frames=5, size=(32, 32), seed=0, progress=False)
    build_bench(tmp_path / "ds", tmp_path / "bench", per_bucket=1, num_frames=5, progress=False)
    components = tiny_wan_components(seed=0)
    controlnet = WanTrajectoryControlNet.from_transformer(components["transformer"])
    pipe = MagicMotionWanPipeline(**components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    out = tmp_path / "run"
    s = run_bench(tmp_path / "bench", out, pipeline=pipe, kind="box", num_inference_steps=2,
                  guidance_scale=1.0, limit=1, progress=False)
    assert s["generated"] == 1
    clip_id = read_run(out)["clips"][0]
    from magicmotion.io import read_video

    video, fps = read_video(out / "videos" / f"{clip_id}.mp4")
    assert video.shape == (5, 32, 32, 3) and fps == pytest.approx(8.0)
    assert (out / "previews" / f"{clip_id}.png").is_file()
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["pipeline"] == "MagicMotionWanPipeline" and settings["num_inference_steps"] == 2
    assert np.asarray(video).std() > 0  # a decoded video, not an empty array


def test_default_guidance_is_the_tiny_models_without_a_base_and_the_papers_with_one(bench_set, tmp_path):
    from magicmotion.pipelines.loading import DEFAULT_GUIDANCE, TINY_GUIDANCE

    run_bench(bench_set, tmp_path / "tiny", generate_fn=frozen, limit=1, progress=False)
    run_bench(bench_set, tmp_path / "real", base="some/model", generate_fn=frozen, limit=1, progress=False)
    run_bench(bench_set, tmp_path / "given", base="some/model", guidance_scale=3.5, trajectory_guidance=2.0,
              generate_fn=frozen, limit=1, progress=False)
    got = [json.loads((tmp_path / n / "run.json").read_text())["settings"] for n in ("tiny", "real", "given")]
    assert [s["guidance_scale"] for s in got] == [TINY_GUIDANCE, DEFAULT_GUIDANCE, 3.5]
    assert TINY_GUIDANCE != DEFAULT_GUIDANCE
    assert [s["trajectory_guidance"] for s in got] == [1.0, 1.0, 2.0]  # off unless asked for

def test_run_takes_the_models_recommended_settings(bench_set, tmp_path):
    from magicmotion.pipelines import load_pipeline
    from magicmotion.pipelines.loading import TINY_MODEL_DIR

    pipe = load_pipeline(base=None, kind="box")
    run_bench(bench_set, tmp_path / "tiny", pipeline=pipe, generate_fn=frozen, limit=1, progress=False)
    settings = read_run(tmp_path / "tiny")["settings"]
    assert settings["guidance_scale"] == 1.0 and settings["num_inference_steps"] == 25
    assert settings["setting_sources"]["guidance_scale"] == str(TINY_MODEL_DIR / "base" / "magicmotion.json")
    run_bench(bench_set, tmp_path / "given", pipeline=pipe, generate_fn=frozen, limit=1, progress=False,
              guidance_scale=3.0)
    settings = read_run(tmp_path / "given")["settings"]
    assert settings["guidance_scale"] == 3.0 and settings["setting_sources"]["guidance_scale"] == "argument"
