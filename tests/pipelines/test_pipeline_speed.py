"""The pipelines' speed options (magicmotion.pipelines.guidance), all off by default: guidance branches
one after the other, ControlNet residuals reused across steps, one ControlNet pass for both branches.
These tests check what each option computes; what it saves is measured in benchmarks/control_cost.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pipelines_helpers import RUN, make_image, make_trajectory

from magicmotion.errors import PipelineError
from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline
from magicmotion.pipelines.guidance import control_steps

PIPELINES = {"wan": (MagicMotionWanPipeline, "wan", "wan_cn_trained"),
             "cogvideox": (MagicMotionCogVideoXPipeline, "cog", "cog_cn_trained")}


@pytest.fixture(params=list(PIPELINES))
def pipe(request, models_dir):
    cls, base, controlnet = PIPELINES[request.param]
    pipe = cls.from_pretrained(models_dir / base, controlnet=models_dir / controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_controlnet(pipe) -> list[int]:
    """The batch size of every ControlNet call from now on."""
    calls = []
    forward = pipe.controlnet.forward

    def counted(noisy_latents, *args, **kwargs):
        calls.append(noisy_latents.shape[0])
        return forward(noisy_latents, *args, **kwargs)

    pipe.controlnet.forward = counted
    return calls


def latents(pipe, **kw) -> torch.Tensor:
    args = dict(image=make_image(), prompt="a red square moves right", trajectory=make_trajectory(), kind="box",
                negative_prompt="blurry", output_type="latent", **RUN)
    args.update(kw)
    return pipe(generator=torch.Generator().manual_seed(0), **args).frames


def test_sequential_guidance_equals_batched(pipe):
    calls = count_controlnet(pipe)
    batched = latents(pipe)
    assert calls == [2, 2]  # one call per step on both branches
    calls.clear()
    sequential = latents(pipe, cfg_mode="sequential")
    assert calls == [1, 1, 1, 1]  # each branch on its own
    # float32 of batch 1 vs 2 per call: measured 5.4e-6 and 2.5e-6 (latents up to ~5)
    torch.testing.assert_close(sequential, batched, atol=1e-5, rtol=0)
    # also with the other options on
    torch.testing.assert_close(latents(pipe, cfg_mode="sequential", control_branches="cond", control_every=2),
                               latents(pipe, control_branches="cond", control_every=2), atol=1e-5, rtol=0)


def test_control_schedule():
    assert control_steps(6) == [True] * 6
    assert control_steps(6, 2) == [True, False, True, False, True, False]
    assert control_steps(7, 3) == [True, False, False, True, False, False, True]
    # dense early: every step for the first 40% (ceil(0.4 * 10) = 4 steps), then every 3rd
    assert control_steps(10, 3, 0.4) == [True] * 4 + [True, False, False, True, False, False]
    assert control_steps(4, 5, 1.0) == [True] * 4


def record_residuals(monkeypatch) -> tuple[list, list]:
    """(computed, used): the residual lists the ControlNet computed, in order, and for every base call
    the residual list it was given (the same objects when reused)."""
    from magicmotion.pipelines.guidance import GuidedPrediction

    computed, used = [], []
    residuals, predict = GuidedPrediction._residuals, GuidedPrediction._predict

    def spy_residuals(self, *args, **kwargs):
        computed.append(residuals(self, *args, **kwargs))
        return computed[-1]

    def spy_predict(self, branch, x, t, context, given, *args, **kwargs):
        used.append(given)
        return predict(self, branch, x, t, context, given, *args, **kwargs)

    monkeypatch.setattr(GuidedPrediction, "_residuals", spy_residuals)
    monkeypatch.setattr(GuidedPrediction, "_predict", spy_predict)
    return computed, used


@pytest.mark.parametrize("every, dense, fresh_steps", [(1, 0.0, [0, 1, 2, 3]), (2, 0.0, [0, 2]), (3, 0.0, [0, 3]),
                                                        (2, 0.5, [0, 1, 2])])
def test_reused_residuals_are_the_ones_computed_at_the_last_control_step(pipe, monkeypatch, every, dense,
                                                                          fresh_steps):
    """With control_every N (after the dense start) a step without the ControlNet gets the very residuals
    computed at the last step that ran it, N steps before at most: the same tensors, not new ones."""
    calls = count_controlnet(pipe)
    computed, used = record_residuals(monkeypatch)
    latents(pipe, num_inference_steps=4, control_every=every, control_dense=dense)  # batched guidance: a call a step
    assert len(calls) == len(computed) == len(fresh_steps) and len(used) == 4
    last = None
    for step, given in enumerate(used):
        if step in fresh_steps:
            last = computed[fresh_steps.index(step)]
        assert given is last, f"step {step}: not the residuals of step {fresh_steps[computed.index(last)]}"
        assert all(r.shape[0] == 2 for r in given)  # both guidance branches
    # fresh residuals differ from step to step (the latents moved): a reuse is not a recomputation
    for a, b in zip(computed, computed[1:]):
        assert any((x - y).abs().max() > 0 for x, y in zip(a, b))


def test_control_every_one_is_the_plain_run(pipe):
    four = dict(num_inference_steps=4)
    plain = latents(pipe, **four)
    np.testing.assert_array_equal(latents(pipe, control_every=1, **four), plain)  # the same computation
    assert (latents(pipe, control_every=2, **four) - plain).abs().max() > 0  # reuse changes the result


def test_one_controlnet_pass_for_both_branches(pipe):
    calls = count_controlnet(pipe)
    same_text = dict(negative_prompt="a red square moves right")  # then the branches' residuals agree
    plain = latents(pipe, **same_text)
    assert calls == [2, 2]
    calls.clear()
    cond = latents(pipe, control_branches="cond", **same_text)
    assert calls == [1, 1]  # half the ControlNet work
    torch.testing.assert_close(cond, plain, atol=1e-5, rtol=0)  # measured 7e-7
    calls.clear()
    latents(pipe, control_branches="cond", cfg_mode="sequential")
    assert calls == [1, 1]  # one call per step instead of two
    # with another negative prompt it is an approximation, not the plain run
    assert (latents(pipe, control_branches="cond") - latents(pipe)).abs().max() > 0
    # without guidance there is one branch and nothing changes
    np.testing.assert_array_equal(latents(pipe, guidance_scale=1.0, control_branches="cond", cfg_mode="sequential"),
                                  latents(pipe, guidance_scale=1.0))


@pytest.mark.parametrize("kw, message", [
    (dict(cfg_mode="parallel"), "cfg_mode"),
    (dict(control_every=0), "control_every"),
    (dict(control_every=1.5), "control_every"),
    (dict(control_dense=1.5), "control_dense"),
    (dict(control_branches="uncond"), "control_branches"),
])
def test_bad_speed_options_fail_before_any_model_runs(pipe, kw, message, monkeypatch):
    monkeypatch.setattr(pipe, "encode_prompt", lambda *a, **k: pytest.fail("a model ran on bad input"))
    with pytest.raises(PipelineError, match=message):
        latents(pipe, **kw)


def test_generate_passes_the_options_on(pipe):
    from magicmotion.pipelines.generate import generate

    calls = count_controlnet(pipe)
    generate(pipe, make_image(), "a red square", make_trajectory(), "box", num_frames=9, height=32, width=32,
             num_inference_steps=2, guidance_scale=6.0, seed=0, cfg_mode="sequential", control_every=2)
    assert calls == [1, 1]  # step 0, each branch on its own; step 1 reuses them


def test_generate_cli_flags(models_dir, inputs_dir, monkeypatch, capsys):
    import json

    from magicmotion.cli import main
    from magicmotion.pipelines import MagicMotionWanPipeline

    seen = []
    call = MagicMotionWanPipeline.__call__

    def spy(self, *args, **kwargs):
        seen.append({k: kwargs.get(k) for k in ("cfg_mode", "control_every", "control_dense", "control_branches")})
        return call(self, *args, **kwargs)

    monkeypatch.setattr(MagicMotionWanPipeline, "__call__", spy)
    base = ["generate", "--base", str(models_dir / "wan"), "--controlnet", str(models_dir / "wan_cn_trained"),
            "--image", str(inputs_dir / "first.png"), "--trajectory", str(inputs_dir / "spec.json"),
            "--prompt", "a red square", "--steps", "2", "--guidance", "4", "--seed", "0"]
    assert main(base + ["--out", str(inputs_dir / "plain.mp4")]) == 0
    assert main(base + ["--out", str(inputs_dir / "fast.mp4"), "--cfg-mode", "sequential", "--control-every", "2",
                        "--control-dense", "0.25", "--control-branches", "cond"]) == 0
    assert seen == [dict.fromkeys(seen[0]),  # nothing given: the pipeline's defaults
                    dict(cfg_mode="sequential", control_every=2, control_dense=0.25, control_branches="cond")]
    assert json.loads((inputs_dir / "plain.json").read_text())["speed"] == {}
    assert json.loads((inputs_dir / "fast.json").read_text())["speed"] == dict(
        cfg_mode="sequential", control_every=2, control_dense=0.25, control_branches="cond")
    capsys.readouterr()
    assert main(base + ["--out", str(inputs_dir / "bad.mp4"), "--control-every", "0"]) == 2
    assert "control_every" in capsys.readouterr().err and not (inputs_dir / "bad.mp4").exists()


def test_bench_run_records_and_passes_the_options(monkeypatch, tmp_path):
    from magicmotion.bench import runner
    from magicmotion.errors import BenchError

    seen = {}
    monkeypatch.setattr(runner, "bench_records", lambda root: [{"id": "a"}])
    monkeypatch.setattr(runner, "_start_run", lambda out, root, settings, records, label: seen.update(settings) or {})
    monkeypatch.setattr("magicmotion.data.reader.Dataset", lambda *a, **k: None)

    def fake_generator(pipe, **kw):
        seen["generator_speed"] = kw["speed"]
        raise RuntimeError("stop")

    monkeypatch.setattr(runner, "pipeline_generator", fake_generator)
    speed = dict(cfg_mode="sequential", control_every=3)
    with pytest.raises(RuntimeError, match="stop"):
        runner.run_bench(tmp_path / "bench", tmp_path / "run", pipeline=object(), num_inference_steps=2,
                         guidance_scale=4.0, speed=speed, progress=False)
    assert seen["speed"] == speed and seen["generator_speed"] == speed
    seen.clear()
    with pytest.raises(RuntimeError, match="stop"):
        runner.run_bench(tmp_path / "bench", tmp_path / "run2", pipeline=object(), num_inference_steps=2,
                         guidance_scale=4.0, progress=False)
    assert "speed" not in seen  # runs without the options keep their settings as before
    with pytest.raises(BenchError, match="control_every"):
        runner.run_bench(tmp_path / "bench", tmp_path / "run3", pipeline=object(), num_inference_steps=2,
                         guidance_scale=4.0, speed=dict(control_every=0), progress=False)
