"""LoRA on a two-expert Wan2.2 A14B base: both experts by default (diffusers loads into the high-noise
expert only), the one the user names, and a file naming the low-noise expert's keys expert by expert.
The truth is the file's own tensors, read back from the experts' LoRA layers."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from magicmotion.errors import ModelError, PipelineError
from magicmotion.pipelines import MagicMotionWanPipeline
from magicmotion.pipelines.loading import load_lora

peft = pytest.importorskip("peft")


def a14b():
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.tiny import tiny_wan22_components

    parts = tiny_wan22_components("a14b")
    return MagicMotionWanPipeline(
        **parts, controlnet=WanTrajectoryControlNet.from_transformer(parts["transformer"], expert="high"),
        controlnet_2=WanTrajectoryControlNet.from_transformer(parts["transformer_2"], expert="low"))


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    """A random rank-4 LoRA of the attention projections, saved as diffusers does (`transformer.*` keys)."""
    from peft.utils import get_peft_model_state_dict

    pipe = a14b()
    torch.manual_seed(0)
    pipe.transformer.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    path = tmp_path_factory.mktemp("lora")
    MagicMotionWanPipeline.save_lora_weights(path, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    return path / "pytorch_lora_weights.safetensors"


def lora_a(transformer) -> torch.Tensor | None:
    """The first block's to_q lora_A weight (None without a LoRA)."""
    layer = transformer.blocks[0].attn1.to_q
    return layer.lora_A["default_0"].weight.detach().clone() if hasattr(layer, "lora_A") and layer.lora_A else None


KEY = "transformer.blocks.0.attn1.to_q.lora_A.weight"


def test_a_lora_reaches_both_experts_by_default(lora_file):
    expected = load_file(lora_file)[KEY]
    pipe = a14b()
    load_lora(pipe, lora_file)
    for transformer in (pipe.transformer, pipe.transformer_2):
        got = lora_a(transformer)
        assert got is not None, "an expert without the LoRA"
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.parametrize("expert, loaded, bare", [("high", "transformer", "transformer_2"),
                                                  ("low", "transformer_2", "transformer")])
def test_the_named_expert_alone(lora_file, expert, loaded, bare):
    pipe = a14b()
    load_lora(pipe, lora_file, expert)
    torch.testing.assert_close(lora_a(getattr(pipe, loaded)), load_file(lora_file)[KEY], atol=0, rtol=0)
    assert lora_a(getattr(pipe, bare)) is None


def test_a_file_naming_the_experts_goes_expert_by_expert(lora_file, tmp_path):
    weights = load_file(lora_file)
    # the low-noise expert's part: other tensors under transformer_2.*
    low = {"transformer_2." + k[len("transformer."):]: v * 2 + 1 for k, v in weights.items()}
    save_file({**weights, **low}, tmp_path / "both.safetensors")
    pipe = a14b()
    load_lora(pipe, tmp_path / "both.safetensors")
    torch.testing.assert_close(lora_a(pipe.transformer), weights[KEY], atol=0, rtol=0)
    torch.testing.assert_close(lora_a(pipe.transformer_2), weights[KEY] * 2 + 1, atol=0, rtol=0)
    # a file with the low-noise expert's keys alone: that expert only
    save_file(low, tmp_path / "low.safetensors")
    pipe = a14b()
    load_lora(pipe, tmp_path / "low.safetensors")
    assert lora_a(pipe.transformer) is None
    torch.testing.assert_close(lora_a(pipe.transformer_2), weights[KEY] * 2 + 1, atol=0, rtol=0)
    with pytest.raises(ModelError, match="no keys for the high-noise expert"):
        load_lora(a14b(), tmp_path / "low.safetensors", "high")


def test_a_named_expert_on_a_one_expert_base_is_refused(lora_file):
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.tiny import tiny_wan_components

    parts = tiny_wan_components(seed=0)
    pipe = MagicMotionWanPipeline(**parts, controlnet=WanTrajectoryControlNet.from_transformer(parts["transformer"]))
    with pytest.raises(PipelineError, match="two-expert"):
        load_lora(pipe, lora_file, "low")
    with pytest.raises(PipelineError, match="unknown LoRA expert"):
        load_lora(pipe, lora_file, "middle")


@pytest.mark.parametrize("flags, message", [(["--lora-expert", "middle"], "unknown LoRA expert 'middle'"),
                                            (["--lora-expert", "low"], "--lora-expert needs --lora")])
def test_lora_expert_flag_is_checked_before_loading(tmp_path, capsys, flags, message):
    from magicmotion.cli import main

    args = ["generate", "--image", str(tmp_path / "no.png"), "--trajectory",
            str(tmp_path / "no.json"), "--prompt", "p", "--out", str(tmp_path / "v.mp4"), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "v.mp4").exists()
