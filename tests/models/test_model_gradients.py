"""Training signal: gradients reach the ControlNet and head, never the frozen base; checkpointing."""

from __future__ import annotations

import pytest
import torch
from models_helpers import base_blocks, build_base, build_inputs, control_blocks, controlnet_class, perturb

from magicmotion.models import MagicMotionTransformer, SegmentHead


def _model(family: str, control_layers: int | None = None):
    base = build_base(family, num_layers=3)
    cn = perturb(controlnet_class(base).from_transformer(base, num_layers=control_layers))
    head = perturb(SegmentHead.from_transformer(base), seed=2)
    return MagicMotionTransformer(base, cn, head)


def _loss(model, inputs, trajectory):
    out = model(trajectory_latents=trajectory, return_segmentation=True, **inputs)
    target = torch.linspace(-1, 1, out.sample.numel()).reshape(out.sample.shape)
    return ((out.sample - target) ** 2).mean() + 0.5 * ((out.segmentation - trajectory) ** 2).mean()


def test_gradients_reach_every_controlnet_and_head_parameter_and_no_base_parameter(family):
    model = _model(family)
    model.train()
    inputs, trajectory = build_inputs(model.base, batch=2)
    _loss(model, inputs, trajectory).backward()
    for name, p in list(model.controlnet.named_parameters()) + list(model.segment_head.named_parameters()):
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    for name, p in model.base.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    assert {id(p) for p in model.trainable_parameters()} == (
        {id(p) for p in model.controlnet.parameters()} | {id(p) for p in model.segment_head.parameters()})


def test_zero_projections_get_gradients_at_initialisation():
    base = build_base("wan", num_layers=2)
    model = MagicMotionTransformer(base, controlnet_class(base).from_transformer(base))
    inputs, trajectory = build_inputs(base)
    model(trajectory_latents=trajectory, **inputs).sample.square().mean().backward()
    for proj in model.controlnet.out_projectors:
        assert proj.weight.grad.abs().sum() > 0 and proj.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("control_layers", [None, 2])
def test_gradient_checkpointing_gives_the_same_gradients(family, control_layers, monkeypatch):
    model = _model(family, control_layers)
    inputs, trajectory = build_inputs(model.base, batch=2)

    def grads():
        model.zero_grad(set_to_none=True)
        loss = _loss(model, inputs, trajectory)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    loss_plain, plain = grads()

    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    model.enable_gradient_checkpointing()
    assert model.base.gradient_checkpointing and model.controlnet.gradient_checkpointing
    loss_ckpt, ckpt = grads()
    assert len(calls) == len(base_blocks(model.base)) + len(control_blocks(model.controlnet))

    # recomputation repeats the same float ops on CPU: measured 0 for the loss and every gradient; the
    # bounds leave float32 slack for non-deterministic kernels elsewhere
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-7)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], atol=1e-6, rtol=1e-5), name

    model.disable_gradient_checkpointing()
    calls.clear()
    grads()
    assert calls == []


def test_checkpointing_is_not_used_without_grad(monkeypatch):
    model = _model("cogvideox")
    model.enable_gradient_checkpointing()
    calls = []
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1))
    inputs, trajectory = build_inputs(model.base)
    with torch.no_grad():
        out = model(trajectory_latents=trajectory, **inputs)
    assert calls == [] and torch.isfinite(out.sample).all()


def test_freeze_base_false_trains_the_base_too():
    base = build_base("wan", num_layers=2)
    model = MagicMotionTransformer(base, controlnet_class(base).from_transformer(base), freeze_base=False)
    inputs, trajectory = build_inputs(base)
    model(trajectory_latents=trajectory, **inputs).sample.square().mean().backward()
    assert base.proj_out.weight.grad is not None
