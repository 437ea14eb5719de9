"""GuidedPrediction (magicmotion.pipelines.guidance) on a tiny joint model, without a pipeline: each
speed option's predictions against the joint model's own forward, computed by hand (fast: no VAE, no
text encoder, no scheduler). test_pipeline_speed.py checks the same options through the pipelines."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from models_helpers import build_base, build_inputs, controlnet_class, perturb  # noqa: E402

from magicmotion.errors import PipelineError  # noqa: E402
from magicmotion.models import MagicMotionTransformer  # noqa: E402
from magicmotion.pipelines.guidance import (  # noqa: E402
    CFG_MODES,
    GuidedPrediction,
    batch_timestep,
    check_speed_options,
)

# batch 1 vs batch 2 in float32 (a batched step runs both branches at once): measured up to 7.2e-7 on
# outputs up to ~2.2; 1e-5 keeps a wrong branch (>= 1.6e-2 apart here), the other branch's residuals
# (3.2e-3) or stale ones (>= 0.68) failing
ROUNDING = dict(atol=1e-5, rtol=0)
SCALE = [0.6, 1.3]  # the ControlNet's scale per control block (not 1: the base scales given residuals too)


@pytest.fixture(scope="module")
def setup():
    """A tiny Wan base with a CLIP image branch (so per-sample extras are exercised) + a perturbed
    ControlNet; one branch's inputs, two different texts, three steps' latents."""
    torch.manual_seed(0)
    base = build_base("wan_clip", num_layers=2)
    model = MagicMotionTransformer(base, perturb(controlnet_class(base).from_transformer(base, num_layers=2))).eval()
    inputs, trajectory = build_inputs(base, batch=1)
    g = torch.Generator().manual_seed(3)
    xs = [inputs["hidden_states"]] + [torch.randn(inputs["hidden_states"].shape, generator=g) for _ in range(2)]
    negative = torch.randn(inputs["encoder_hidden_states"].shape, generator=g)
    return SimpleNamespace(model=model, xs=xs, trajectory=trajectory, t=torch.tensor(500), positive=inputs[
        "encoder_hidden_states"], negative=negative, image={"encoder_hidden_states_image": inputs[
            "encoder_hidden_states_image"]})


def plain(s, x, text, residuals=None, scale=None, trajectory=None):
    """The joint model's forward on one branch (batch 1): the ControlNet run on `trajectory` (default the
    setup's) unless `residuals` are given."""
    with torch.no_grad():
        return s.model(hidden_states=x, timestep=s.t.expand(1), encoder_hidden_states=text,
                       trajectory_latents=s.trajectory if trajectory is None else trajectory,
                       conditioning_scale=SCALE if scale is None else scale,
                       control_residuals=residuals, return_dict=False, **s.image)[0]


def residuals(s, x, text, scale=SCALE):
    with torch.no_grad():
        return s.model.controlnet_residuals(x, s.t.expand(1), text, s.trajectory, scale, **s.image)


def steps(s, guided, negative=True, n=3):
    with torch.no_grad():
        return [guided(i, s.xs[i], s.trajectory, s.t, s.negative if negative else None, s.positive,
                       per_sample=dict(s.image)) for i in range(n)]


@pytest.mark.parametrize("cfg_mode", ["batched", "sequential"])
def test_each_branch_is_the_joint_models_forward_on_its_text(setup, cfg_mode):
    s = setup
    for i, (uncond, cond) in enumerate(steps(s, GuidedPrediction(s.model, 3, SCALE, cfg_mode=cfg_mode))):
        if cfg_mode == "sequential":  # the same batch-1 computation: exactly
            torch.testing.assert_close(uncond, plain(s, s.xs[i], s.negative), atol=0, rtol=0)
            torch.testing.assert_close(cond, plain(s, s.xs[i], s.positive), atol=0, rtol=0)
        else:
            torch.testing.assert_close(uncond, plain(s, s.xs[i], s.negative), **ROUNDING)
            torch.testing.assert_close(cond, plain(s, s.xs[i], s.positive), **ROUNDING)
    # the two texts give different predictions (so a swapped branch fails the checks above)
    assert (plain(s, s.xs[0], s.negative) - plain(s, s.xs[0], s.positive)).abs().max() > 1e-2


def test_sequential_equals_batched_with_every_option(setup):
    s = setup
    for kw in (dict(), dict(control_every=2), dict(control_branches="cond"), dict(control_every=2, control_dense=0.4)):
        batched = steps(s, GuidedPrediction(s.model, 3, SCALE, **kw))
        sequential = steps(s, GuidedPrediction(s.model, 3, SCALE, cfg_mode="sequential", **kw))
        for a, b in zip(batched, sequential):
            torch.testing.assert_close(a[0], b[0], **ROUNDING)
            torch.testing.assert_close(a[1], b[1], **ROUNDING)


def test_without_guidance_one_branch_exactly(setup):
    s = setup
    for kw in (dict(), dict(cfg_mode="sequential"), dict(control_branches="cond")):
        for i, (uncond, cond) in enumerate(steps(s, GuidedPrediction(s.model, 3, SCALE, **kw), negative=False)):
            assert uncond is None
            torch.testing.assert_close(cond, plain(s, s.xs[i], s.positive), atol=0, rtol=0)


def test_control_every_one_is_the_plain_run_exactly(setup):
    s = setup
    default = steps(s, GuidedPrediction(s.model, 3, SCALE, cfg_mode="sequential"))
    every = steps(s, GuidedPrediction(s.model, 3, SCALE, cfg_mode="sequential", control_every=1, control_dense=0.0))
    for a, b in zip(default, every):
        torch.testing.assert_close(b[0], a[0], atol=0, rtol=0)
        torch.testing.assert_close(b[1], a[1], atol=0, rtol=0)


@pytest.mark.parametrize("cfg_mode", ["batched", "sequential"])
# control_dense 0.3 of 3 steps: ceil(0.9) = 1 dense step, then every 2nd
@pytest.mark.parametrize("every, dense, fresh", [(2, 0.0, [0, 2]), (3, 0.0, [0]), (2, 0.3, [0, 1])])
def test_steps_between_control_steps_reuse_the_last_residuals(setup, cfg_mode, every, dense, fresh):
    """Step i without the ControlNet predicts with the residuals of the last step that ran it (computed
    on that step's latents), on each branch's own text."""
    s = setup
    got = steps(s, GuidedPrediction(s.model, 3, SCALE, cfg_mode=cfg_mode, control_every=every, control_dense=dense))
    exact = dict(atol=0, rtol=0) if cfg_mode == "sequential" else ROUNDING
    for i, (uncond, cond) in enumerate(got):
        last = max(j for j in fresh if j <= i)
        torch.testing.assert_close(uncond, plain(s, s.xs[i], s.negative, residuals(s, s.xs[last], s.negative)), **exact)
        torch.testing.assert_close(cond, plain(s, s.xs[i], s.positive, residuals(s, s.xs[last], s.positive)), **exact)
        if i != last:  # reuse is not a recomputation: the fresh residuals differ measurably
            assert (cond - plain(s, s.xs[i], s.positive)).abs().max() > 1e-3


@pytest.mark.parametrize("cfg_mode", ["batched", "sequential"])
def test_control_on_the_conditional_branch_only(setup, cfg_mode):
    """control_branches "cond": both branches get the residuals of the conditional text."""
    s = setup
    got = steps(s, GuidedPrediction(s.model, 3, SCALE, cfg_mode=cfg_mode, control_branches="cond", control_every=2))
    exact = dict(atol=0, rtol=0) if cfg_mode == "sequential" else ROUNDING
    for i, (uncond, cond) in enumerate(got):
        given = residuals(s, s.xs[i - i % 2], s.positive)  # steps 0 and 2 run it
        torch.testing.assert_close(uncond, plain(s, s.xs[i], s.negative, given), **exact)
        torch.testing.assert_close(cond, plain(s, s.xs[i], s.positive, given), **exact)
    # an approximation: the unconditional branch's own residuals give another prediction
    assert (got[0][0] - plain(s, s.xs[0], s.negative)).abs().max() > 1e-3


def test_blocks_with_scale_zero(setup):
    """Control with only the second block's scale non-zero is still control (and the scale is applied)."""
    s = setup
    for kw in (dict(), dict(cfg_mode="sequential"), dict(control_every=2)):
        for i, (uncond, cond) in enumerate(steps(s, GuidedPrediction(s.model, 3, [0.0, 1.5], **kw))):
            with torch.no_grad():
                last = i - i % kw.get("control_every", 1)
                given = s.model.controlnet_residuals(s.xs[last], s.t.expand(1), s.positive, s.trajectory, [0.0, 1.5],
                                                     **s.image)
            torch.testing.assert_close(cond, plain(s, s.xs[i], s.positive, given, scale=[0.0, 1.5]), **ROUNDING)
        assert (cond - plain(s, s.xs[2], s.positive, scale=0.0)).abs().max() > 1e-3


def test_scale_zero_runs_no_controlnet(setup, monkeypatch):
    s = setup
    calls = []
    monkeypatch.setattr(s.model, "controlnet_residuals", lambda *a, **k: calls.append(1) or pytest.fail("ran"))
    for kw in (dict(), dict(cfg_mode="sequential"), dict(control_branches="cond")):
        for i, (uncond, cond) in enumerate(steps(s, GuidedPrediction(s.model, 3, 0.0, **kw))):
            with torch.no_grad():
                base = s.model.base(hidden_states=s.xs[i], timestep=s.t.expand(1), encoder_hidden_states=s.positive,
                                    return_dict=False, **s.image)[0]
            torch.testing.assert_close(cond, base, **ROUNDING)
        uncond_plain = steps(s, GuidedPrediction(s.model, 3, [0.0, 0.0], **kw), negative=False)
        assert uncond_plain[0][0] is None
    assert not calls


@pytest.mark.parametrize("kw, names", [(dict(), ["cond_uncond"]), (dict(cfg_mode="sequential"), ["uncond", "cond"]),
                                       (dict(negative=False), ["cond"])])
def test_each_base_call_runs_in_its_branchs_cache_context(setup, monkeypatch, kw, names):
    s = setup
    seen = []
    context = s.model.cache_context
    monkeypatch.setattr(s.model, "cache_context", lambda name: seen.append(name) or context(name))
    negative = kw.pop("negative", True)
    steps(s, GuidedPrediction(s.model, 2, SCALE, **kw), negative=negative, n=2)
    assert seen == names * 2


def test_faster_cache_is_refused_without_batched_guidance(setup):
    from diffusers.hooks import HookRegistry

    from magicmotion.pipelines.memory import cache_config

    base = build_base("wan", num_layers=2)
    model = MagicMotionTransformer(base, controlnet_class(base).from_transformer(base, num_layers=1))
    model.enable_cache(cache_config(SimpleNamespace(transformer=base, current_timestep=900), "faster"))
    inputs, trajectory = build_inputs(base)
    x, t, text = inputs["hidden_states"], torch.tensor(900), inputs["encoder_hidden_states"]
    for cfg_mode, negative in (("sequential", text), ("batched", None)):
        guided = GuidedPrediction(model, 2, 1.0, cfg_mode=cfg_mode)
        with pytest.raises(PipelineError, match=r"^the FasterCache cache needs classifier-free guidance "
                                                r"\(guidance_scale > 1\) with cfg_mode 'batched'"):
            guided(0, x, trajectory, t, negative, text)
    # with batched guidance it runs (both branches in one batch, as FasterCache expects)
    with torch.no_grad():
        uncond, cond = GuidedPrediction(model, 2, 1.0)(0, x, trajectory, t, text.flip(1), text)
    assert uncond.shape == cond.shape == x[:, :16].shape
    # without FasterCache (another hook, or none) the check passes
    HookRegistry.check_if_exists_or_initialize(base)
    model.base.disable_cache()
    with torch.no_grad():
        assert GuidedPrediction(model, 2, 1.0, cfg_mode="sequential")(0, x, trajectory, t, text, text)[0] is not None


def test_batch_timestep():
    assert batch_timestep(torch.tensor(7), 3).tolist() == [7, 7, 7]
    per_token = torch.arange(5).reshape(1, 5)  # Wan2.2 TI2V: one timestep per token
    assert batch_timestep(per_token, 2).tolist() == [list(range(5))] * 2


@pytest.mark.parametrize("args, message", [
    (("parallel", 1, 0.0, "both"), "unknown cfg_mode 'parallel': expected one of batched, sequential"),
    (("batched", 1, 0.0, "uncond"), "unknown control_branches 'uncond': expected one of both, cond"),
    (("batched", 0, 0.0, "both"), "control_every must be an integer >= 1, got 0"),
    (("batched", True, 0.0, "both"), "control_every must be an integer >= 1, got True"),
    (("batched", 2.0, 0.0, "both"), "control_every must be an integer >= 1, got 2.0"),
    (("batched", 1, -0.01, "both"), "control_dense must be a fraction in 0..1, got -0.01"),
    (("batched", 1, 1.01, "both"), "control_dense must be a fraction in 0..1, got 1.01"),
    (("batched", 1, float("nan"), "both"), "control_dense must be a fraction in 0..1, got nan"),
    (("batched", 1, "0.5", "both"), "control_dense must be a fraction in 0..1, got '0.5'"),
])
def test_bad_speed_options_name_the_option_and_value(args, message):
    with pytest.raises(PipelineError) as err:
        check_speed_options(*args)
    assert str(err.value) == message


def test_speed_options_at_their_bounds_are_accepted():
    for args in (("batched", 1, 0.0, "both"), ("sequential", 1, 1, "cond"), ("batched", 5, 1.0, "both"),
                 ("sequential", 2, 0, "both")):
        check_speed_options(*args)


@pytest.mark.parametrize("cfg_mode", ["batched", "sequential"])
def test_shared_extras_reach_the_controlnet_and_the_base(cfg_mode):
    """CogVideoX with rotary embeddings: `shared` (image_rotary_emb) goes to both the ControlNet and the base."""
    base = build_base("cogvideox", use_rotary_positional_embeddings=True)
    model = MagicMotionTransformer(base, perturb(controlnet_class(base).from_transformer(base, num_layers=2))).eval()
    inputs, trajectory = build_inputs(base)
    shared = dict(image_rotary_emb=inputs.pop("image_rotary_emb"))
    x, t, text = inputs["hidden_states"], torch.tensor(700), inputs["encoder_hidden_states"]
    negative = text.flip(1)
    with torch.no_grad():
        got = GuidedPrediction(model, 1, SCALE, cfg_mode=cfg_mode)(0, x, trajectory, t, negative, text, shared=shared)
        for pred, context in zip(got, (negative, text)):
            expected = model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=context,
                             trajectory_latents=trajectory, conditioning_scale=SCALE, **shared).sample
            torch.testing.assert_close(pred, expected, **ROUNDING)
            # the ControlNet without the rotary embedding gives another prediction
            other = model.controlnet_residuals(x, t.expand(1), context, trajectory, SCALE)
            assert (pred - model(hidden_states=x, timestep=t.expand(1), encoder_hidden_states=context,
                                 trajectory_latents=None, conditioning_scale=SCALE, control_residuals=other,
                                 **shared).sample).abs().max() > 1e-3


def test_control_blocks_after_the_last_nonzero_scale_are_not_run(setup):
    """The ControlNet runs only up to the last block whose scale is not 0 (the rest is saved work)."""
    s = setup
    for cfg_mode in CFG_MODES:
        guided = GuidedPrediction(s.model, 1, [1.3, 0.0], cfg_mode=cfg_mode)
        steps(s, guided, n=1)
        assert all(len(r) == 1 for r in guided.residuals.values())
