"""diffusers' own mechanisms with the ControlNet attached (the joint model runs the base's forward, the
control residuals added by block hooks): caches, LoRA scale, fp8 layerwise casting, group offload, VAE
tiling and slicing, each against the plain pipeline on tiny models."""

from __future__ import annotations

import pytest
import torch
from pipelines_helpers import RUN, make_image, make_trajectory

from magicmotion.errors import PipelineError
from magicmotion.models.transformer import CONTROL_HOOK
from magicmotion.pipelines import MagicMotionCogVideoXPipeline, MagicMotionWanPipeline
from magicmotion.pipelines.loading import cache_config, enable_memory_options

PIPELINES = {"wan": (MagicMotionWanPipeline, "wan", "wan_cn_trained"),
             "cogvideox": (MagicMotionCogVideoXPipeline, "cog", "cog_cn_trained")}
STEPS = 8


def load(models_dir, family):
    cls, base, controlnet = PIPELINES[family]
    pipe = cls.from_pretrained(models_dir / base, controlnet=models_dir / controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(params=list(PIPELINES))
def family(request):
    return request.param


def run(pipe, **kw) -> torch.Tensor:
    args = dict(image=make_image(), prompt="a red square moves right", trajectory=make_trajectory(), kind="box",
                negative_prompt="blurry", output_type="latent", **RUN)
    args.update(num_inference_steps=STEPS)
    args.update(kw)
    return pipe(generator=torch.Generator().manual_seed(0), **args).frames


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def count_calls(module) -> list[int]:
    calls = []
    module.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls


def block_attention(pipe, index: int):
    blocks = pipe.transformer.blocks if hasattr(pipe.transformer, "blocks") else pipe.transformer.transformer_blocks
    return blocks[index].attn1.to_q


# Relative L2 error of the final latents against the plain run, on these random tiny models at 8 steps,
# calibrated per base and cache between the right run and the wrong variants below (measured here,
# right / control applied twice (scale 2) / control outside the cached block / control dropped):
#   wan  first-block 0.052 / 0.108 / 0.166 / 0.535   taylorseer 0.0029 / 0.084 / - / 0.533
#        faster      0.0011 / 0.085 / - / 0.534
#   cog  first-block 0.091 / 0.129 / 0.087 / 0.864   taylorseer 0.036 / 0.106 / - / 0.895
#        faster      0.065 / 0.127 / - / 0.867
# (the same in sequential guidance). Each bound sits between the right run and the nearest wrong one.
# TaylorSeer and FasterCache cache attention outputs, not blocks, so "outside the cached block" is the
# right placement for them; on CogVideoX, First Block Cache with the control hook outside the block
# stays as close as the right placement (0.087): only on Wan does that variant fail its bound.
CACHE_BOUND = {("wan", "first-block"): 0.075, ("wan", "taylorseer"): 0.02, ("wan", "faster"): 0.02,
               ("cogvideox", "first-block"): 0.11, ("cogvideox", "taylorseer"): 0.06,
               ("cogvideox", "faster"): 0.095}


def cached_run(models_dir, family, cache, guidance, cfg_mode, variant="right") -> torch.Tensor:
    """The final latents with `cache` enabled (First Block Cache at threshold 0.5: the random tiny model
    changes fast, so it skips often enough to be seen), right or as a wrong variant: "twice" (the
    control residual added twice: scale 2), "dropped" (no control), "outside" (the control hook
    registered outside the cache's block hooks, so a skipped block's replayed residual and the control
    are separate)."""
    from diffusers.hooks import HookRegistry

    from magicmotion.models.transformer import ControlResidualHook

    pipe = load(models_dir, family)
    config = cache_config(pipe, cache)
    if cache == "first-block":
        config.threshold = 0.5
    pipe.transformer.enable_cache(config)
    if variant == "outside":
        blocks = pipe.transformer.blocks if family == "wan" else pipe.transformer.transformer_blocks
        for block in blocks:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(ControlResidualHook(), CONTROL_HOOK)
    scale = {"twice": 2.0, "dropped": 0.0}.get(variant, 1.0)
    return run(pipe, guidance_scale=guidance, cfg_mode=cfg_mode, controlnet_conditioning_scale=scale)


@pytest.mark.parametrize("cache, guidance, cfg_mode", [("first-block", 6.0, "batched"),
                                                        ("first-block", 6.0, "sequential"),
                                                        ("first-block", 1.0, "batched"),
                                                        ("taylorseer", 6.0, "batched"),
                                                        ("taylorseer", 6.0, "sequential"),
                                                        ("faster", 6.0, "batched")])
def test_cache_runs_skips_compute_and_stays_close(models_dir, family, cache, guidance, cfg_mode):
    plain_pipe = load(models_dir, family)
    last = count_calls(block_attention(plain_pipe, -1))
    plain = run(plain_pipe, guidance_scale=guidance, cfg_mode=cfg_mode)
    full = len(last)

    pipe = load(models_dir, family)
    config = cache_config(pipe, cache)
    if cache == "first-block":
        config.threshold = 0.5  # the random tiny model changes fast: skip often enough to be seen
    pipe.transformer.enable_cache(config)
    last = count_calls(block_attention(pipe, -1))
    cached = run(pipe, guidance_scale=guidance, cfg_mode=cfg_mode)
    assert cached.shape == plain.shape and torch.isfinite(cached).all()
    assert len(last) < full, f"{cache}: the last block's attention ran {len(last)} of {full} times"
    bound = CACHE_BOUND[family, cache]
    assert relative_error(cached, plain) < bound
    # a second call starts from a fresh cache: the same result again (measured 0)
    torch.testing.assert_close(run(pipe, guidance_scale=guidance, cfg_mode=cfg_mode), cached)
    if cfg_mode == "batched" and guidance > 1:  # the wrong variants fail the bound (once per cache)
        wrong = ["twice", "dropped"] + (["outside"] if (family, cache) == ("wan", "first-block") else [])
        for variant in wrong:
            error = relative_error(cached_run(models_dir, family, cache, guidance, cfg_mode, variant), plain)
            assert error > bound, f"{cache}: the wrong variant {variant!r} passes ({error:.3f} < {bound})"


def hook_names(model) -> set[str]:
    """The diffusers hooks registered anywhere in `model`."""
    return {name for m in model.modules() if hasattr(m, "_diffusers_hook") for name in m._diffusers_hook._hook_order}


@pytest.mark.parametrize("cache", ["first-block", "taylorseer", "faster"])
def test_enable_memory_options_enables_the_cache_as_configured(models_dir, cache):
    """`enable_memory_options(cache=...)` (what load_pipeline and generate run) gives the run of the cache
    enabled directly with `cache_config`, and on the base's own hook registry."""
    direct = load(models_dir, "wan")
    direct.transformer.enable_cache(cache_config(direct, cache))
    expected = run(direct, num_inference_steps=6)
    pipe = enable_memory_options(load(models_dir, "wan"), "cpu", cache=cache)
    assert hook_names(pipe.transformer) - {CONTROL_HOOK} == hook_names(direct.transformer) - {CONTROL_HOOK} != set()
    torch.testing.assert_close(run(pipe, num_inference_steps=6), expected, atol=0, rtol=0)
    assert relative_error(expected, run(load(models_dir, "wan"), num_inference_steps=6)) > 0  # the cache acts


@pytest.mark.parametrize("trajectory_guidance", [1.0, 2.0])
def test_first_block_cache_that_never_skips_equals_plain(models_dir, family, trajectory_guidance):
    """Threshold 0: every block runs, and the control residuals are added exactly once per block (also
    with trajectory guidance's uncontrolled pass, in its own cache context)."""
    plain = run(load(models_dir, family), trajectory_guidance_scale=trajectory_guidance)
    pipe = load(models_dir, family)
    config = cache_config(pipe, "first-block")
    config.threshold = 0.0
    pipe.transformer.enable_cache(config)  # before any joint model: the control hook goes in under it
    # every block runs: measured 0; 1e-5 is float32 slack (latents up to ~7)
    torch.testing.assert_close(run(pipe, trajectory_guidance_scale=trajectory_guidance), plain, atol=1e-5, rtol=0)
    blocks = pipe.transformer.blocks if family == "wan" else pipe.transformer.transformer_blocks
    for block in (blocks[0], blocks[-1]):  # innermost, so the cache skips and replays block + residual
        assert block._diffusers_hook._hook_order[0] == CONTROL_HOOK
        assert len(block._diffusers_hook._hook_order) == 2


@pytest.mark.parametrize("cfg_mode, guidance", [("sequential", 6.0), ("batched", 1.0)])
def test_faster_cache_needs_batched_guidance(models_dir, family, cfg_mode, guidance):
    pipe = load(models_dir, family)
    pipe.transformer.enable_cache(cache_config(pipe, "faster"))
    with pytest.raises(PipelineError, match="FasterCache"):
        run(pipe, cfg_mode=cfg_mode, guidance_scale=guidance)


def test_faster_cache_with_trajectory_guidance_is_refused_before_any_model_runs(models_dir, family):
    """FasterCache approximates the unconditional half of a batch; trajectory guidance's pass without
    control is a third branch of batch 1 (it failed inside diffusers with a ValueError)."""
    pipe = load(models_dir, family)
    pipe.transformer.enable_cache(cache_config(pipe, "faster"))
    ran = count_calls(pipe.text_encoder)
    with pytest.raises(PipelineError, match="trajectory guidance"):
        run(pipe, trajectory_guidance_scale=2.0)
    assert not ran


def test_generate_refuses_faster_cache_with_trajectory_guidance_before_loading(models_dir, inputs_dir, capsys,
                                                                                monkeypatch):
    from magicmotion.cli import main
    from magicmotion.pipelines import loading

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_pipeline", no_loading)
    assert main(cli_args(models_dir, inputs_dir, "--cache", "faster", "--trajectory-guidance", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cache faster" in err[0] and "--trajectory-guidance" in err[0]
    assert not (inputs_dir / "video.mp4").exists()


def test_unknown_option_values_are_refused(models_dir):
    pipe = load(models_dir, "wan")
    for kw in (dict(cache="tea"), dict(offload="disk"), dict(weights_dtype="int4")):
        with pytest.raises(PipelineError, match=next(iter(kw))):
            enable_memory_options(pipe, "cpu", **kw)


def test_fp8_layerwise_casting_is_close_to_plain(models_dir, family):
    plain = run(load(models_dir, family), num_inference_steps=2)
    pipe = enable_memory_options(load(models_dir, family), "cpu", weights_dtype="fp8")
    for model in (pipe.transformer, pipe.controlnet):  # weights stored in fp8, norms and embeddings not
        assert any(p.dtype == torch.float8_e4m3fn for p in model.parameters())
    out = run(pipe, num_inference_steps=2)
    # e4m3 keeps 3 mantissa bits: ~3% per weight. Measured 0.016 (Wan) / 0.027 (CogVideoX); the wrong
    # variant, the control dropped (a ControlNet lost in the cast), 0.54 / 1.03. (The control at 0.9 of
    # its scale, 0.025 / 0.036, is inside fp8's noise: this bound does not see a scale off by 10%.)
    assert relative_error(out, plain) < 0.1
    assert relative_error(run(pipe, num_inference_steps=2, controlnet_conditioning_scale=0.0), plain) > 0.1


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
def test_group_offload_gives_the_same_output(models_dir, family, offload_type):
    plain = run(load(models_dir, family), num_inference_steps=2)
    pipe = enable_memory_options(load(models_dir, family), "cpu", offload="group", group_offload_type=offload_type)
    assert any(hasattr(m, "_diffusers_hook") for m in pipe.controlnet.modules())  # the ControlNet is offloaded too
    torch.testing.assert_close(run(pipe, num_inference_steps=2), plain, atol=1e-6, rtol=0)  # measured 0


@torch.no_grad()
def test_vae_tiling_and_slicing_are_close(models_dir, family):
    vae = load(models_dir, family).vae
    z = vae.config.get("z_dim") or vae.config.latent_channels
    latents = torch.randn(2, z, 2, 4, 4, generator=torch.Generator().manual_seed(0))  # two videos
    plain = vae.decode(latents).sample
    vae.enable_slicing()
    # one video at a time: float32 rounding of other batch sizes, measured 2.5e-6 at |x| up to 3
    torch.testing.assert_close(vae.decode(latents).sample, plain, atol=1e-5, rtol=0)
    vae.disable_slicing()

    latents = smooth_latents(z, 12, 12)  # 96x96: four 64-px tiles
    plain = vae.decode(latents).sample
    overlap = (dict(tile_sample_stride_height=32, tile_sample_stride_width=32) if family == "wan"
               else dict(tile_overlap_factor_height=0.5, tile_overlap_factor_width=0.5))
    vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, **overlap)
    tiled = vae.decode(latents).sample
    assert tiled.shape == plain.shape
    # Tiles blended at their overlaps. The bound comes from the measured noise of tiling a smooth input
    # with these random tiny VAEs (each tile normalised on its own, a wide receptive field): Wan 0.062,
    # CogVideoX 0.122. The wrong variant, one tile put back mirrored, gives Wan 0.124, CogVideoX 0.85
    # (and Wan's tiles without overlap 0.183).
    bound = {"wan": 0.09, "cogvideox": 0.2}[family]
    assert relative_error(tiled, plain) < bound
    mirrored = tiled.clone()
    mirrored[..., 48:, 48:] = tiled[..., 48:, 48:].flip(-1)
    assert relative_error(mirrored, plain) > bound
    if family == "wan":
        vae.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=64,
                          tile_sample_stride_width=64)
        assert relative_error(vae.decode(latents).sample, plain) > bound


def smooth_latents(channels: int, h: int, w: int) -> torch.Tensor:
    """(1, C, 1, h, w): a low-frequency pattern per channel (a smooth picture's latent, not noise)."""
    import math

    y, x = torch.linspace(0, 1, h)[:, None], torch.linspace(0, 1, w)[None, :]
    return torch.stack([torch.sin(2 * math.pi * (0.5 + 0.25 * c) * x + c) * torch.cos(2 * math.pi * (0.3 + 0.2 * c) * y)
                        for c in range(channels)])[None, :, None].contiguous()


def cli_args(models_dir, inputs_dir, *extra) -> list[str]:
    return ["generate", "--base", str(models_dir / "wan"), "--controlnet", str(models_dir / "wan_cn_trained"),
            "--image", str(inputs_dir / "first.png"), "--trajectory", str(inputs_dir / "spec.json"),
            "--prompt", "a red square moves right", "--out", str(inputs_dir / "video.mp4"), "--steps", "3",
            "--seed", "0", "--guidance", "6", *extra]


def test_generate_with_the_options_records_them(models_dir, inputs_dir):
    import json

    from magicmotion.cli import main

    assert main(cli_args(models_dir, inputs_dir, "--cache", "first-block", "--weights-dtype", "fp8",
                         "--offload", "group", "--vae-tiling")) == 0
    record = json.loads((inputs_dir / "video.json").read_text())
    assert (record["cache"], record["weights_dtype"], record["offload"], record["vae_tiling"]) == (
        "first-block", "fp8", "group", True)


@pytest.mark.parametrize("flags, message", [(["--cache", "tea"], "unknown cache 'tea'"),
                                            (["--offload", "disk"], "unknown offload 'disk'"),
                                            (["--weights-dtype", "int4"], "unknown weights dtype 'int4'"),
                                            (["--lora-scale", "nan"], "--lora-scale")])
@pytest.mark.parametrize("command", ["generate", "bench", "app"])
def test_bad_option_values_exit_2_in_one_line(models_dir, inputs_dir, capsys, flags, message, command,
                                              tmp_path_factory):
    from magicmotion.cli import main

    args = {"generate": cli_args(models_dir, inputs_dir),
            "bench": ["bench", "run", str(inputs_dir), "--out", str(tmp_path_factory.mktemp("out") / "run")],
            "app": ["app"]}[command]
    before = sorted(p.name for p in inputs_dir.iterdir())
    assert main(args + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("magicmotion: error:") and message in err[0]
    assert sorted(p.name for p in inputs_dir.iterdir()) == before


@pytest.fixture(scope="module")
def lora_dir(models_dir, tmp_path_factory):
    """A random LoRA (rank 4, attention projections) for the tiny Wan base, saved as diffusers does."""
    peft = pytest.importorskip("peft")
    from peft.utils import get_peft_model_state_dict

    pipe = load(models_dir, "wan")
    torch.manual_seed(0)
    pipe.transformer.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    path = tmp_path_factory.mktemp("lora")
    MagicMotionWanPipeline.save_lora_weights(path, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    return path


def test_lora_scale_reaches_the_base(models_dir, lora_dir):
    from magicmotion.pipelines.loading import load_pipeline

    plain = run(load(models_dir, "wan"), num_inference_steps=2)
    pipe = load_pipeline(base=models_dir / "wan", controlnet=models_dir / "wan_cn_trained", device="cpu",
                         lora=lora_dir)
    pipe.set_progress_bar_config(disable=True)
    torch.testing.assert_close(run(pipe, num_inference_steps=2, attention_kwargs={"scale": 0.0}), plain,
                               atol=1e-6, rtol=0)  # scale 0 = no LoRA: measured 0
    half = run(pipe, num_inference_steps=2, attention_kwargs={"scale": 0.5})
    assert relative_error(half, plain) > 1e-3  # measured 0.022
    # scale s in attention_kwargs = the LoRA fused into the base's weights at s (diffusers' fuse_lora)
    pipe.fuse_lora(lora_scale=0.5)
    pipe.unload_lora_weights()
    # W + s BA fused vs Wx + s BAx: float32 rounding, measured 5.5e-6 (the half-scale LoRA moved it 0.022)
    torch.testing.assert_close(run(pipe, num_inference_steps=2), half, atol=1e-5, rtol=0)
