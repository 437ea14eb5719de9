"""MagicMotionWanPipeline on Wan2.2 bases against diffusers' WanImageToVideoPipeline, on tiny components
saved to disk: TI2V-5B (`expand_timesteps`, the 48-channel VAE, x16 in space) and I2V-A14B (two experts,
a ControlNet each, switched at `boundary_ratio`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pipelines_helpers import make_image, make_trajectory, randomize_projectors

from magicmotion.cli import main
from magicmotion.errors import ModelError, PipelineError
from magicmotion.io import read_video
from magicmotion.pipelines import MagicMotionWanPipeline, load_pipeline
from magicmotion.trajectory import save

PROMPT = "a red square moves right"
TI2V_RUN = dict(num_frames=9, height=64, width=64, num_inference_steps=2, guidance_scale=6.0)
# 4 steps at t = 999, 900 (high noise: t >= 0.9 * 1000), 750, 500 (low noise)
A14B_RUN = dict(num_frames=9, height=32, width=32, num_inference_steps=4, guidance_scale=6.0, guidance_scale_2=3.0)


@pytest.fixture(scope="module")
def wan22_dir(tmp_path_factory) -> Path:
    """ti2v/ and a14b/ (diffusers base folders); ti2v_cn/, a14b_high/ and a14b_low/ (ControlNets with
    random projectors; the A14B ones built from their own expert, `expert` high / low)."""
    from diffusers import WanImageToVideoPipeline

    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.tiny import tiny_wan22_components

    root = tmp_path_factory.mktemp("wan22")
    ti2v = tiny_wan22_components("ti2v")
    WanImageToVideoPipeline(**ti2v).save_pretrained(root / "ti2v")
    randomize_projectors(WanTrajectoryControlNet.from_transformer(ti2v["transformer"], expand_timesteps=True)
                         ).save_pretrained(root / "ti2v_cn")
    a14b = tiny_wan22_components("a14b")
    WanImageToVideoPipeline(**a14b).save_pretrained(root / "a14b")
    for name, part, seed in (("high", "transformer", 1), ("low", "transformer_2", 2)):
        cn = WanTrajectoryControlNet.from_transformer(a14b[part], expert=name)
        randomize_projectors(cn, seed=seed).save_pretrained(root / f"a14b_{name}")
    return root


def load(root: Path, base: str, **controlnets) -> MagicMotionWanPipeline:
    pipe = MagicMotionWanPipeline.from_pretrained(root / base, **{k: root / v for k, v in controlnets.items()})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference(root: Path, base: str, run: dict, size: int) -> np.ndarray:
    from diffusers import WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(root / base)
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=Image.fromarray(make_image(size)), prompt=PROMPT, negative_prompt="blurry",
                generator=torch.Generator().manual_seed(0), **run).frames


def generate(pipe, run: dict, size: int, seed: int = 0, **kw):
    args = dict(image=make_image(size), prompt=PROMPT, trajectory=make_trajectory(size), kind="box",
                negative_prompt="blurry", **run)
    args.update(kw)
    return pipe(generator=torch.Generator().manual_seed(seed), **args).frames


# ---------------------------------------------------------------------------------------- TI2V-5B


def test_ti2v_scale_zero_reproduces_diffusers(wan22_dir):
    expected = reference(wan22_dir, "ti2v", TI2V_RUN, 64)
    pipe = load(wan22_dir, "ti2v", controlnet="ti2v_cn")
    assert pipe.config.expand_timesteps and pipe.spatial_multiple() == 32
    got = generate(pipe, TI2V_RUN, 64, controlnet_conditioning_scale=0.0)
    assert got.shape == expected.shape == (1, 9, 64, 64, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # float32, frames in [0, 1]: measured <= 2e-6
    # "> 1e-3": a real change, 1000x the float32 noise of these runs (<= 2e-6 in the equivalences)
    assert np.abs(generate(pipe, TI2V_RUN, 64) - got).max() > 1e-3  # the ControlNet changes the video


def test_ti2v_first_frame_latents_stay_clean_and_trajectory_latents_are_48_wide(wan22_dir):
    pipe = load(wan22_dir, "ti2v", controlnet="ti2v_cn")
    shapes = []

    def callback(p, i, t, tensors):
        shapes.append(tuple(tensors["trajectory_latents"].shape))
        return {}

    kw = dict(output_type="latent", callback_on_step_end=callback,
              callback_on_step_end_tensor_inputs=["trajectory_latents"])
    on = generate(pipe, TI2V_RUN, 64, **kw)
    off = generate(pipe, TI2V_RUN, 64, output_type="latent", controlnet_conditioning_scale=0.0)
    assert shapes == [(1, 48, 3, 4, 4)] * 2
    # the first latent frame is the image's, whatever the ControlNet does; the rest follow it
    torch.testing.assert_close(on[:, :, 0], off[:, :, 0], atol=0, rtol=0)
    assert (on[:, :, 1:] - off[:, :, 1:]).abs().max() > 1e-3
    # the trajectory latents are the VAE's (z - mean) / std, like the image's
    maps = np.zeros((9, 64, 64, 3), np.uint8)
    z = pipe.vae.encode(torch.full((1, 3, 9, 64, 64), -1.0)).latent_dist.mode()
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, 48, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, 48, 1, 1, 1)
    torch.testing.assert_close(pipe.encode_trajectory(maps, torch.device("cpu")), (z - mean) / std)


def test_ti2v_sizes_are_multiples_of_32(wan22_dir):
    pipe = load(wan22_dir, "ti2v", controlnet="ti2v_cn")
    assert pipe.limits().multiple == 32 and pipe.default_size((100, 70)) == (96, 64)
    settings = pipe.model_settings
    assert (settings["fps"], settings["num_frames"], settings["area"]) == (24.0, 121, 1280 * 704)
    w, h = pipe.default_size((1920, 1080))  # 16:9 within TI2V-5B's 1280x704 area, in multiples of 32
    assert w % 32 == h % 32 == 0 and w * h <= 1280 * 704 and (w + 32) * (h + 32) > 1280 * 704 and (w, h) == (1248, 704)
    with pytest.raises(PipelineError, match="multiples of 32"):
        generate(pipe, {**TI2V_RUN, "height": 48, "width": 48}, 48)


def test_ti2v_transformer_without_expand_timesteps_is_refused():
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines.tiny import tiny_wan22_components

    parts = tiny_wan22_components("ti2v")
    cn = WanTrajectoryControlNet.from_transformer(parts["transformer"], num_layers=1, expand_timesteps=True)
    with pytest.raises(ModelError, match="lacks expand_timesteps: true"):
        MagicMotionWanPipeline(**{**parts, "expand_timesteps": False}, controlnet=cn)


# ---------------------------------------------------------------------------------------- I2V-A14B


def test_a14b_scale_zero_reproduces_diffusers_two_experts(wan22_dir):
    expected = reference(wan22_dir, "a14b", A14B_RUN, 32)
    pipe = load(wan22_dir, "a14b", controlnet="a14b_high", controlnet_2="a14b_low")
    assert pipe.two_experts and pipe.boundary_timestep() == 900
    got = generate(pipe, A14B_RUN, 32, controlnet_conditioning_scale=0.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # float32, frames in [0, 1]: measured <= 2e-6
    # guidance_scale_2 reaches the low-noise steps, as in diffusers
    assert np.abs(generate(pipe, {**A14B_RUN, "guidance_scale_2": 6.0}, 32, controlnet_conditioning_scale=0.0)
                  - got).max() > 1e-3


def record_control(pipe) -> dict[str, list[int]]:
    """The timesteps at which each ControlNet runs."""
    seen = {"controlnet": [], "controlnet_2": []}
    for name in seen:
        getattr(pipe, name).register_forward_hook(
            lambda m, a, o, name=name: seen[name].append(int(pipe.current_timestep)))
    return seen


def step_latents(pipe, **kw) -> list[torch.Tensor]:
    out = []

    def callback(p, i, t, tensors):
        out.append(tensors["latents"].clone())
        return {}

    generate(pipe, A14B_RUN, 32, output_type="latent", callback_on_step_end=callback, **kw)
    return out


def test_a14b_switches_controlnet_with_the_expert(wan22_dir):
    pipe = load(wan22_dir, "a14b", controlnet="a14b_high", controlnet_2="a14b_low")
    seen = record_control(pipe)
    both = step_latents(pipe)
    assert seen == {"controlnet": [999, 900], "controlnet_2": [750, 500]}  # t = 900 is high noise, as in diffusers
    none = step_latents(pipe, controlnet_conditioning_scale=0.0)
    for proj in pipe.controlnet_2.out_projectors:  # the low-noise ControlNet off: the high steps are unchanged
        torch.nn.init.zeros_(proj.weight)
    high_only = step_latents(pipe)
    for i in (0, 1):
        torch.testing.assert_close(high_only[i], both[i], atol=0, rtol=0)
        assert (both[i] - none[i]).abs().max() > 1e-3
    assert (high_only[2] - both[2]).abs().max() > 1e-3

    # control_every=3 runs a ControlNet at steps 0 and 3 and reuses residuals in between, but never
    # across the switch: the low-noise ControlNet runs on its first step
    seen["controlnet"].clear(), seen["controlnet_2"].clear()
    step_latents(pipe, control_every=3)
    assert seen == {"controlnet": [999], "controlnet_2": [750, 500]}


def test_a14b_loading_and_saving(wan22_dir, tmp_path):
    with pytest.raises(ModelError, match="a ControlNet per expert"):
        load(wan22_dir, "a14b", controlnet="a14b_high")
    with pytest.raises(ModelError, match="give it as controlnet_2"):
        load(wan22_dir, "a14b", controlnet="a14b_low", controlnet_2="a14b_high")
    with pytest.raises(ModelError, match="this base has one transformer"):
        load(wan22_dir, "ti2v", controlnet="ti2v_cn", controlnet_2="a14b_low")
    pipe = load(wan22_dir, "a14b", controlnet="a14b_high", controlnet_2="a14b_low")
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.9 and index["controlnet_2"][1] == "WanTrajectoryControlNet"
    expected = step_latents(pipe)[-1]
    # the saved pipeline needs no ControlNet named; a folder holding both is one --controlnet; the
    # high-noise one given as a model, the saved low-noise one comes with the folder
    from magicmotion.models import WanTrajectoryControlNet

    high = WanTrajectoryControlNet.from_pretrained(wan22_dir / "a14b_high")
    for again in (load(tmp_path, "saved"), load_pipeline(tmp_path / "saved"),
                  load_pipeline(wan22_dir / "a14b", controlnet=tmp_path / "saved"),
                  load_pipeline(tmp_path / "saved", controlnet=high)):
        again.set_progress_bar_config(disable=True)
        assert again.controlnet.config.expert == "high" and again.controlnet_2.config.expert == "low"
        torch.testing.assert_close(step_latents(again)[-1], expected)


def test_a14b_model_offload_gives_the_same_latents(wan22_dir):
    plain = load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=wan22_dir / "a14b_low")
    offloaded = load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=wan22_dir / "a14b_low",
                              offload="model", device="cpu")
    # text encoder -> transformer -> transformer_2 -> vae, and each ControlNet alone
    assert len(offloaded._all_hooks) == 6
    for pipe in (plain, offloaded):
        pipe.set_progress_bar_config(disable=True)
    torch.testing.assert_close(step_latents(offloaded)[-1], step_latents(plain)[-1], atol=1e-6, rtol=1e-6)  # measured 0


def test_a14b_low_noise_controlnet_is_checked_and_in_the_pipelines_dtype(wan22_dir, models_dir):
    """`controlnet_2` named by folder or given as a model: refused when it is for another family, in the
    pipeline's dtype when it loads (as the high-noise one is)."""
    from magicmotion.models import WanTrajectoryControlNet

    with pytest.raises(ModelError, match=r"cog_cn: a cogvideox ControlNet cannot drive a wan base$"):
        load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=models_dir / "cog_cn")
    pipe = load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=wan22_dir / "a14b_low",
                         dtype="bf16")
    assert pipe.controlnet.dtype == pipe.controlnet_2.dtype == torch.bfloat16
    # a module that is no ControlNet (it was an AttributeError)
    base_low = MagicMotionWanPipeline.from_pretrained(wan22_dir / "a14b", controlnet=wan22_dir / "a14b_high",
                                                      controlnet_2=wan22_dir / "a14b_low").transformer_2
    for module, name in ((torch.nn.Linear(2, 2), "Linear"), (base_low, "WanTransformer3DModel")):
        with pytest.raises(ModelError, match=rf"^controlnet_2: {name} is not a Trajectory ControlNet$"):
            load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=module)
    low = WanTrajectoryControlNet.from_pretrained(wan22_dir / "a14b_low")
    expected = {k: v.to(torch.bfloat16) for k, v in low.state_dict().items()}
    pipe = load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=low, dtype="bf16")
    assert pipe.controlnet_2.dtype == torch.bfloat16 and pipe.controlnet_2.config.expert == "low"
    for key, value in pipe.controlnet_2.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a14b_lora_goes_to_the_expert_named(wan22_dir, tmp_path):
    """load_pipeline(lora=..., lora_expert=...): the LoRA's tensors in the named expert alone (the truth:
    the file's own tensors), in both without a name."""
    peft = pytest.importorskip("peft")
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from magicmotion.pipelines.tiny import tiny_wan22_components

    transformer = tiny_wan22_components("a14b")["transformer"]
    torch.manual_seed(0)
    transformer.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q"]))
    MagicMotionWanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(transformer))
    lora = tmp_path / "pytorch_lora_weights.safetensors"
    expected = load_file(lora)["transformer.blocks.0.attn1.to_q.lora_A.weight"]

    def lora_a(model):
        layer = model.blocks[0].attn1.to_q
        return layer.lora_A["default_0"].weight if hasattr(layer, "lora_A") and layer.lora_A else None

    for expert, high, low in (("low", False, True), ("high", True, False), (None, True, True)):
        pipe = load_pipeline(wan22_dir / "a14b", wan22_dir / "a14b_high", controlnet_2=wan22_dir / "a14b_low",
                             lora=lora, lora_expert=expert)
        for model, has in ((pipe.transformer, high), (pipe.transformer_2, low)):
            got = lora_a(model)
            assert (got is not None) == has, expert
            if has:
                torch.testing.assert_close(got, expected, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("base, controlnets, size", [
    ("ti2v", ["--controlnet", "ti2v_cn"], 64),
    ("a14b", ["--controlnet", "a14b_high", "--controlnet-2", "a14b_low"], 32),
])
def test_generate_cli(wan22_dir, tmp_path, capsys, base, controlnets, size):
    Image.fromarray(make_image(size)).save(tmp_path / "first.png")
    save(make_trajectory(size), tmp_path / "spec.json")
    cn = [a if a.startswith("--") else str(wan22_dir / a) for a in controlnets]
    args = ["generate", "--base", str(wan22_dir / base), *cn, "--image", str(tmp_path / "first.png"),
            "--trajectory", str(tmp_path / "spec.json"), "--prompt", PROMPT, "--out", str(tmp_path / "v.mp4"),
            "--steps", "2", "--seed", "0"]
    assert main(args) == 0
    frames, fps = read_video(tmp_path / "v.mp4")
    assert frames.shape == (9, size, size, 3) and fps == (24 if base == "ti2v" else 16)
    settings = json.loads((tmp_path / "v.json").read_text())
    assert settings["model"] == "MagicMotionWanPipeline"
    if base == "ti2v":  # the Wan2.2 VAE's x16: sizes in multiples of 32, refused before the model loads
        small = [str(tmp_path / "w.mp4") if a == str(tmp_path / "v.mp4") else a for a in args]
        assert main([*small, "--size", "48x48"]) == 2
        assert "multiples of 32" in capsys.readouterr().err and not (tmp_path / "w.mp4").exists()
        # --guidance-2 is for a two-expert base only
        assert main([*small, "--guidance-2", "3"]) == 2
        assert "two-expert" in capsys.readouterr().err and not (tmp_path / "w.mp4").exists()
    if base == "a14b":
        assert settings["controlnet_2"] == str(wan22_dir / "a14b_low")
        # the low-noise expert's ControlNet alone is refused: exit 2, nothing written
        bad = args[:args.index("--controlnet")] + ["--controlnet", str(wan22_dir / "a14b_high")] + args[
            args.index("--image"):]
        bad[bad.index("--out") + 1] = str(tmp_path / "bad.mp4")
        assert main(bad) == 2 and not (tmp_path / "bad.mp4").exists()
        assert "needs a ControlNet per expert" in capsys.readouterr().err
        # --guidance-2: the low-noise expert's scale (the second of the 2 steps, t = 500), recorded
        other = [str(tmp_path / "g.mp4") if a == str(tmp_path / "v.mp4") else a for a in args]
        assert main([*other, "--guidance-2", "1"]) == 0
        assert json.loads((tmp_path / "g.json").read_text())["guidance_scale_2"] == 1.0
        assert not np.array_equal(read_video(tmp_path / "g.mp4")[0], frames)
        assert main([*other, "--guidance-2", "nan"]) == 2 and "--guidance-2" in capsys.readouterr().err
