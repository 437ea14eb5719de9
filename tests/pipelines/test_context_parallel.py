"""Context-parallel inference (`magicmotion.pipelines.parallel`) on CPU: two gloo processes split one
video's tokens, the Trajectory ControlNet split with them, and give the video one process makes.

One launch of two processes (tests/pipelines/cp_worker.py) runs everything split: the CLI, the
benchmark's smoke mode and the pipeline cases of tests/pipelines/cp_cases.py; the tests compare its
outputs with the same runs made whole in this process.

Ulysses runs on gloo as it is (gloo has all-to-all). Ring attention merges its parts with their
log-sum-exp, which diffusers' CPU attention does not return (its ring kernels are CUDA's), so the
worker gives diffusers' CPU attention op that of torch's CPU flash-attention kernel for the ring cases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from cp_cases import CASES, load_case, run_case
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pipelines_helpers import make_image, make_trajectory
from shared_helpers import run_two_ranks

from magicmotion.cli import main
from magicmotion.errors import PipelineError
from magicmotion.pipelines import loading
from magicmotion.pipelines.parallel import check_split
from magicmotion.trajectory import save

WORKER = Path(__file__).with_name("cp_worker.py")
# Frames are floats in [0, 1]. Ulysses gives the whole run's numbers exactly (every process attends
# the whole sequence over its heads); ring attention adds its two halves' softmax parts in another
# order, which moved these frames by 1.5e-6 at most when measured. 1e-4 is float32 rounding through
# the two blocks, two steps and the VAE with room to spare, and 1000x below what adding the
# residuals unsplit does (0.097 measured; see test_residuals_added_unsplit_fail).
ATOL = 1e-4
PROMPT = "a red square moves right"


def cli_args(models_dir, inputs: Path, out: Path, **extra) -> list[str]:
    args = ["generate", "--base", str(models_dir / "wan"), "--controlnet", str(models_dir / "wan_cn_trained"),
            "--image", str(inputs / "first.png"), "--trajectory", str(inputs / "spec.json"), "--prompt", PROMPT,
            "--out", str(out), "--steps", "2", "--guidance", "6"]
    for flag, value in extra.items():
        args += [f"--{flag.replace('_', '-')}", str(value)]
    return args


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """first.png (32x32) and spec.json (32x32, 9 frames: 3 x 2 x 2 = 12 tokens, 6 per process)."""
    folder = tmp_path_factory.mktemp("cp_inputs")
    Image.fromarray(make_image()).save(folder / "first.png")
    save(make_trajectory(), folder / "spec.json")
    return folder


@pytest.fixture(scope="module")
def split(models_dir, inputs, tmp_path_factory) -> Path:
    """The launch's output folder (see the module docstring); the CLI's video in cli/ (no --seed: rank
    0 draws one and sends it to rank 1)."""
    out = tmp_path_factory.mktemp("cp_split")
    (out / "cli").mkdir()
    run_two_ranks([sys.executable, str(WORKER), str(out),
                   *cli_args(models_dir, inputs, out / "cli" / "video.mp4", context_parallel="ulysses")], timeout=600)
    return out


def split_frames(split: Path, name: str) -> np.ndarray:
    ranks = [np.load(split / f"{name}.rank{r}.npy") for r in (0, 1)]
    np.testing.assert_array_equal(ranks[0], ranks[1])  # both processes hold the same whole video
    return ranks[0]


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.get("controlnet_whole")])
def test_split_video_equals_one_process(split, name):
    case = CASES[name]
    whole = run_case(load_case(case), case)
    np.testing.assert_allclose(split_frames(split, name), whole, rtol=0, atol=ATOL)


def test_residuals_added_unsplit_fail(split):
    # the ControlNet left whole beside a split base: its full-length residual does not fit a part
    for rank in (0, 1):
        message = (split / f"whole.rank{rank}.txt").read_text()
        assert "control residual of 24 tokens for a block output of 12" in message
    # made to fit as if unsplit (each process adds the residual's first half): not the video
    ring = run_case(load_case(CASES["ring"]), CASES["ring"])
    assert np.abs(split_frames(split, "unsplit") - ring).max() > 100 * ATOL


def test_cli_rank0_writes_the_video_of_one_process(split, models_dir, inputs, tmp_path):
    assert [(split / f"cli.rank{r}.txt").read_text() for r in (0, 1)] == ["0", "0"]
    written = sorted(p.name for p in (split / "cli").iterdir())
    assert written == ["video.json", "video.mp4", "video.preview.gif", "video.preview.png"]  # rank 0's, once
    record = json.loads((split / "cli" / "video.json").read_text())
    assert record["context_parallel"] == {"mode": "ulysses", "processes": 2}
    # the same seed in one process gives the same frames (the lossless preview: x264 is not
    # bit-reproducible at 32x32 here), so both processes used rank 0's seed
    assert main(cli_args(models_dir, inputs, tmp_path / "video.mp4", seed=record["seed"])) == 0
    np.testing.assert_array_equal(np.array(Image.open(split / "cli" / "video.preview.png")),
                                  np.array(Image.open(tmp_path / "video.preview.png")))


def test_benchmark_smoke_mode(split):
    result = json.loads((split / "bench.json").read_text())
    assert result["processes"] == 2 and result["tokens"] == 3 * 2 * 4
    whole, ulysses = result["rows"]
    assert (whole["mode"], whole["gpus"], ulysses["mode"], ulysses["gpus"]) == ("whole", 1, "ulysses", 2)
    assert whole["seconds"] > 0 and ulysses["seconds"] > 0
    assert ulysses["rel_diff"] <= 1e-6  # float32, Ulysses: the whole model's numbers (0 measured)


# ---------------------------------------------------------------------------------------- refusals


@pytest.fixture
def launched(monkeypatch):
    """A launch of two processes as the CLI sees it before anything loads; loading fails the test."""
    monkeypatch.setenv("WORLD_SIZE", "2")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded before the refusal")

    monkeypatch.setattr(loading, "load_pipeline", no_loading)


@pytest.mark.parametrize("extra, base, message", [
    (dict(cache="first-block"), "wan", "--cache first-block cannot run with --context-parallel"),
    (dict(offload="group"), "wan", "--offload group is not supported with --context-parallel"),
    (dict(offload="sequential"), "wan", "--offload sequential is not supported"),
    (dict(), "cog", "--context-parallel is for Wan bases"),
    (dict(mode="ring"), "wan", "--context-parallel ring needs CUDA GPUs"),
    (dict(mode="spiral"), "wan", "unknown --context-parallel 'spiral'"),
])
def test_refused_before_loading(launched, models_dir, inputs, capsys, extra, base, message):
    mode = extra.pop("mode", "ulysses")
    args = cli_args(models_dir, inputs, inputs / "refused.mp4", context_parallel=mode, **extra)
    if base == "cog":
        args[2], args[4] = str(models_dir / "cog"), str(models_dir / "cog_cn_trained")
        args += ["--size", "32x32"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(inputs.glob("refused*"))


def test_split_sizes_and_launches_refused(monkeypatch, models_dir, inputs, capsys):
    def refused(world: str | None, mode: str = "ulysses") -> str:
        if world is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", world)
        assert main(cli_args(models_dir, inputs, inputs / "refused.mp4", context_parallel=mode)) == 2
        return capsys.readouterr().err

    assert "under `torchrun --nproc-per-node N`" in refused(None)  # one process: nothing to split across
    assert "12 tokens, which do not split into 5 equal parts" in refused("5")
    assert "has 2 attention heads, which do not divide by 4" in refused("4")  # 12 tokens split in 4, 2 heads do not
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["generate", "--csv", str(inputs / "rows.csv"), "--context-parallel", "ulysses"]) == 2
    assert "--context-parallel makes one video at a time" in capsys.readouterr().err


@pytest.mark.parametrize("setup, message", [
    (dict(cache="first-block"), "--cache first-block cannot run with --context-parallel"),
    (dict(offload="group"), "--offload group is not supported"),
    (dict(family="cogvideox"), "--context-parallel is for Wan bases"),
])
def test_python_api_refuses_a_loaded_pipeline(monkeypatch, setup, message):
    """`enable_context_parallel` on a loaded pipeline finds what the CLI refuses before loading."""
    import torch

    from magicmotion.pipelines.parallel import enable_context_parallel

    monkeypatch.setenv("WORLD_SIZE", "2")
    if setup.get("family") == "cogvideox":
        from magicmotion.models import CogVideoXTrajectoryControlNet
        from magicmotion.pipelines import MagicMotionCogVideoXPipeline, tiny_cogvideox_components

        parts = tiny_cogvideox_components(seed=0)
        pipe = MagicMotionCogVideoXPipeline(
            **parts, controlnet=CogVideoXTrajectoryControlNet.from_transformer(parts["transformer"]))
    else:
        pipe = load_case(setup)
        if setup.get("offload") == "group":
            pipe.transformer.enable_group_offload(onload_device=torch.device("cpu"), offload_type="block_level",
                                                  num_blocks_per_group=1)
    with pytest.raises(PipelineError, match=message.replace("-", r"\-")):
        enable_context_parallel(pipe, "ulysses")
    assert getattr(pipe, "context_parallel", None) is None


def test_bench_run_refuses_before_reading_anything(launched, tmp_path, capsys):
    args = ["bench", "run", str(tmp_path / "no-bench"), "--out", str(tmp_path / "run"), "--context-parallel", "ulysses"]
    assert main([*args, "--cache", "first-block"]) == 2
    assert "--cache first-block cannot run with --context-parallel" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@settings(max_examples=60, deadline=None)
@given(tokens=st.integers(1, 5000), heads=st.integers(1, 64), world=st.integers(2, 16),
       mode=st.sampled_from(["ring", "ulysses"]))
def test_check_split_refuses_exactly_what_does_not_divide(tokens, heads, world, mode):
    fits = tokens % world == 0 and (mode == "ring" or heads % world == 0)
    try:
        check_split(mode, world, {"num_attention_heads": heads}, tokens)
    except PipelineError as e:
        assert not fits and "\n" not in str(e)
    else:
        assert fits
