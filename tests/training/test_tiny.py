"""The tiny-model recipe's own pieces (magicmotion.training.tiny): the synthetic clips and the
trajectory maps its VAE trains on, and the stage configs it trains the shipped model with."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from magicmotion.trajectory import PALETTE, palette_index
from magicmotion.training import tiny


def test_world_clips_are_seeded_and_labelled():
    frames, labels = tiny.world_clips(3, seed=5)
    assert frames.shape == (3, tiny.FRAMES, tiny.SIZE[1], tiny.SIZE[0], 3) and frames.dtype == np.uint8
    assert labels.shape == frames.shape[:-1]
    again, _ = tiny.world_clips(3, seed=5)
    np.testing.assert_array_equal(frames, again)
    assert all(1 <= len(np.unique(clip[0])) - 1 <= 5 for clip in labels)


def test_mask_maps_paint_each_label_in_its_palette_colour():
    _, labels = tiny.world_clips(2, seed=1)
    maps = tiny.trajectory_maps(labels, "mask")
    assert maps.shape == (*labels.shape, 3)
    for oid in np.unique(labels)[1:]:
        np.testing.assert_array_equal(maps[labels == oid], np.broadcast_to(PALETTE[palette_index(oid)], ((labels == oid).sum(), 3)))
    assert not maps[labels == 0].any()


def test_box_maps_outline_the_tight_box_after_a_filled_first_frame():
    _, labels = tiny.world_clips(2, seed=3)
    labels = labels[:, :, 8:40, 16:48]  # a crop, as the VAE sees them: objects may leave it
    maps = tiny.trajectory_maps(labels, "box")
    np.testing.assert_array_equal(maps[:, 0], tiny.trajectory_maps(labels[:, :1], "mask")[:, 0])
    for clip, clip_maps in zip(labels, maps):
        for t in range(1, clip.shape[0]):
            for oid in np.unique(clip[t])[1:]:
                ys, xs = np.nonzero(clip[t] == oid)
                y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
                colour = PALETTE[palette_index(oid)]
                # the tight box's border is painted all round (thickness 1 at this size; where
                # boxes cross, the later object's colour), in this object's colour somewhere
                f = clip_maps[t]
                border = np.concatenate([f[y0, x0:x1 + 1], f[y1, x0:x1 + 1], f[y0:y1 + 1, x0], f[y0:y1 + 1, x1]])
                assert border.any(axis=-1).all()
                assert (border == colour).all(axis=-1).any()


def test_empty_crop_gives_black_maps():
    labels = np.zeros((2, 5, 16, 16), dtype=np.int32)
    assert not tiny.trajectory_maps(labels, "box").any()



class _RoundTrip:
    """A stand-in autoencoder: encode is the identity, decode applies `fn` to the latents."""

    def __init__(self, fn):
        self.fn = fn

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x))

    def decode(self, z):
        return SimpleNamespace(sample=self.fn(z))


def test_outline_recall_counts_the_drawn_pixels_that_survive_the_round_trip():
    _, labels = tiny.world_clips(2, seed=4)
    assert tiny.outline_recall(_RoundTrip(lambda z: z), labels, "box") == 1.0
    assert tiny.outline_recall(_RoundTrip(lambda z: torch.full_like(z, -1.0)), labels, "box") == 0.0

    def lose_right_half(z):  # the round trip keeps only the left half of each frame
        z = z.clone()
        z[..., z.shape[-1] // 2:] = -1.0
        return z

    drawn = tiny.trajectory_maps(labels, "box")[:, 1:].max(-1) > 0
    left = drawn[..., : drawn.shape[-1] // 2].sum() / drawn.sum()
    assert abs(tiny.outline_recall(_RoundTrip(lose_right_half), labels, "box") - left) < 1e-6  # a float32 ratio


def test_finetune_for_maps_trains_a_copy_and_leaves_the_old_vae_alone():
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    old = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[True], latents_mean=[0.0] * 4, latents_std=[0.5] * 4)
    before = {k: v.clone() for k, v in old.state_dict().items()}
    frames, labels = tiny.world_clips(3, seed=0)
    frames, labels = frames[:, :5, :16, :16], labels[:, :5, :16, :16]
    new = tiny.finetune_for_maps(old, frames, labels, steps=4, crop=16, lr=1e-3)
    assert new is not old and not new.training and dict(new.config) == dict(old.config)
    for k, v in old.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert any(not torch.equal(v, new.state_dict()[k]) for k, v in before.items())
    again = tiny.finetune_for_maps(old, frames, labels, steps=4, crop=16, lr=1e-3)  # seeded
    for k, v in new.state_dict().items():
        torch.testing.assert_close(v, again.state_dict()[k])


def test_vae_round_trip_generator_returns_the_clip_through_the_vae(tmp_path):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[True])
    vae.save_pretrained(tmp_path / "vae")
    frames, _ = tiny.world_clips(1, seed=2)
    frames = frames[0, :5, :16, :16]
    out = tiny.vae_round_trip(tmp_path / "vae")(SimpleNamespace(frames=frames), None)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    with torch.no_grad():
        x = tiny.to_tensor(frames[None])
        want = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    want = ((want[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(out, want)


def test_unknown_phase_is_an_error_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tiny.main(["--work", str(tmp_path / "work"), "--phases", "data,stage"])
    assert e.value.code == 2
    assert "unknown phase(s) stage" in capsys.readouterr().err
    assert not (tmp_path / "work" / "data").exists()


def test_stage_configs_chain_and_match_the_shipped_model(tmp_path):
    """Each stage starts from the one before it (the same ControlNet layout, the paper's lambdas), the
    ablations are stage 2's settings with one change, and the shipped ControlNets have the configs'
    layout."""
    import json

    from magicmotion.pipelines.loading import TINY_MODEL_DIR

    work = tmp_path / "work"
    (work / "data" / "stages").mkdir(parents=True)
    for stage in ("stage1", "stage2"):  # what stages 2 and 3 start from: here the shipped stages
        (work / stage).symlink_to(TINY_MODEL_DIR / stage)
    (work / "base").symlink_to(TINY_MODEL_DIR / "base")  # a config's base must exist when it loads
    cfg = {name: tiny.stage_config(name, work) for name in tiny.STAGES + tiny.ABLATIONS}
    assert [cfg[s].condition for s in tiny.STAGES] == ["mask", "box", "sparse_box"]
    assert cfg["stage1"].init_from is None
    assert cfg["stage2"].init_from == str(work / "stage1")
    assert cfg["stage3"].init_from == str(work / "stage2") and cfg["stage3"].init_head
    assert [cfg[s].lambda_seg for s in tiny.STAGES] == [0.0, 0.5, 0.5]
    assert {c.controlnet_layers for c in cfg.values()} == {cfg["stage1"].controlnet_layers}
    scratch, noseg, stage2 = cfg["stage2-from-scratch"], cfg["stage2-no-seg"], cfg["stage2"]
    assert scratch.init_from is None and scratch.lambda_seg == stage2.lambda_seg
    assert noseg.init_from == stage2.init_from and noseg.lambda_seg == 0 and not noseg.segment_head
    for c in (scratch, noseg):
        assert c.condition == "box" and c.loop.max_steps == stage2.loop.max_steps and c.optim == stage2.optim
    assert all(c.noise == stage2.noise for c in cfg.values())  # every stage samples timesteps alike
    base_layers = json.loads((TINY_MODEL_DIR / "base" / "transformer" / "config.json").read_text())["num_layers"]
    for stage in tiny.STAGES:
        layers = json.loads((TINY_MODEL_DIR / stage / "controlnet" / "config.json").read_text())["num_layers"]
        assert layers == (cfg[stage].controlnet_layers or base_layers), stage


def test_ship_stores_fp16_weights_that_load_back_as_the_trained_values(tmp_path):
    """`ship` packs a work folder's base and stages: the transformer, ControlNets and heads in fp16
    (values = the fp32 ones rounded), the 48 KB text encoder in fp32 so that plain transformers loads
    it as fp32 too; an older package is replaced whole."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from safetensors import safe_open
    from transformers import UMT5EncoderModel

    from magicmotion.models import SegmentHead, WanTrajectoryControlNet
    from magicmotion.pipelines.loading import TINY_MODEL_DIR
    from magicmotion.pipelines.settings import read_settings_file
    from magicmotion.pipelines.tiny import tiny_wan_components

    work, out = tmp_path / "work", tmp_path / "pkg"
    pipe = WanImageToVideoPipeline(**tiny_wan_components(seed=0))
    pipe.save_pretrained(work / "base")
    nets = {}
    for i, stage in enumerate(tiny.STAGES):
        net = WanTrajectoryControlNet.from_transformer(pipe.transformer, num_layers=1)
        with torch.no_grad():
            net.out_projectors[0].weight.normal_(generator=torch.Generator().manual_seed(i))
        net.save_pretrained(work / stage / "final" / "controlnet")
        nets[stage] = net
        if stage != "stage1":
            SegmentHead.from_transformer(pipe.transformer).save_pretrained(work / stage / "final" / "segment_head")
    (out / "stale").mkdir(parents=True)

    tiny.ship(work, out)

    assert not (out / "stale").exists() and not out.with_name("pkg.tmp").exists()
    # the settings travel with a retrained package, as the tracked one has them
    shipped = json.loads((out / "base" / "magicmotion.json").read_text())
    assert shipped == json.loads((TINY_MODEL_DIR / "base" / "magicmotion.json").read_text())
    assert read_settings_file(out / "base")["num_frames"] == tiny.FRAMES == shipped["num_frames"]
    assert not (out / "stage1" / "segment_head").exists() and (out / "stage3" / "segment_head").is_dir()

    def stored_dtypes(folder):
        with safe_open(str(next(folder.glob("*.safetensors"))), "pt") as f:
            return {f.get_slice(k).get_dtype() for k in f.keys()}
    assert stored_dtypes(out / "base" / "transformer") == {"F16"}
    assert stored_dtypes(out / "stage2" / "controlnet") == {"F16"}
    assert stored_dtypes(out / "base" / "text_encoder") == {"F32"}
    text_encoder = UMT5EncoderModel.from_pretrained(out / "base" / "text_encoder")
    assert text_encoder.dtype == torch.float32
    torch.testing.assert_close(text_encoder.state_dict(), pipe.text_encoder.state_dict(), rtol=0, atol=0)
    transformer = WanTransformer3DModel.from_pretrained(out / "base" / "transformer")
    want = {k: v.half().float() for k, v in pipe.transformer.state_dict().items()}
    torch.testing.assert_close(transformer.float().state_dict(), want, rtol=0, atol=0)
    net = WanTrajectoryControlNet.from_pretrained(out / "stage3" / "controlnet").float()
    w = nets["stage3"].out_projectors[0].weight
    assert w.abs().sum() > 0 and torch.equal(net.out_projectors[0].weight, w.half().float())


@pytest.mark.parametrize("device, message", [
    ("cuda:7", "--device 'cuda:7': "),  # no CUDA here, or fewer than 8 devices on a GPU machine
    ("tpu", "--device 'tpu': not a device"),
    ("meta", "--device 'meta': the recipe runs on cpu, cuda, cuda:N or mps"),
])
def test_a_bad_device_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, device, message):
    assert tiny.main(["--work", str(tmp_path / "work"), "--device", device, "--phases", "data"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m magicmotion.training.tiny: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "work").exists()


def test_accelerate_device_is_set_inside_and_restored(monkeypatch):
    import os

    monkeypatch.delenv("ACCELERATE_TORCH_DEVICE", raising=False)
    with tiny.accelerate_device(torch.device("cpu")):
        from accelerate import PartialState
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
        assert os.environ["ACCELERATE_TORCH_DEVICE"] == "cpu" and PartialState().device == torch.device("cpu")
    assert "ACCELERATE_TORCH_DEVICE" not in os.environ
    monkeypatch.setenv("ACCELERATE_TORCH_DEVICE", "cuda:3")
    with tiny.accelerate_device(torch.device("cpu")):
        assert os.environ["ACCELERATE_TORCH_DEVICE"] == "cpu"
    assert os.environ["ACCELERATE_TORCH_DEVICE"] == "cuda:3"
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.slow  # about 70 s of CPU time here (a minute of it model loading and precompute)
def test_the_recipe_runs_every_phase_on_the_given_device_and_resumes(tmp_path):
    """`make tiny-model DEVICE=...` at a toy size (8 training clips, 2 in memory for the VAE, 2 steps a phase) with --device
    cpu: every phase runs, the shipped folder loads as a MagicMotion pipeline with CPU float32
    weights, and a second run finds every output and redoes nothing."""
    from magicmotion.pipelines.loading import load_pipeline

    work, out, examples = tmp_path / "work", tmp_path / "tiny", tmp_path / "examples"
    argv = ["--work", str(work), "--out", str(out), "--examples", str(examples), "--device", "cpu",
            "--phases", "data,vae,base,maps,stages,examples", "--train-clips", "8", "--test-clips", "4",
            "--vae-clips", "2", "--vae-steps", "2", "--base-steps", "2", "--maps-steps", "2",
            "--stage-steps", "2"]
    assert tiny.main(argv) == 0
    for stage in tiny.STAGES:
        assert (out / stage / "controlnet" / "config.json").is_file()
    assert (examples / "trajectory.json").is_file() and (examples / "first_frame.png").is_file()
    assert json.loads((work / "base.json").read_text()) | {"final_loss_ema": 0} == {
        "final_loss_ema": 0, "steps": 2, "clips": 8, "conditioning": tiny.BASE_CONDITIONING}
    # the default base takes the first frame as Wan2.2 TI2V does, and the package says so
    assert json.loads((out / "base" / "model_index.json").read_text())["expand_timesteps"] is True
    assert (out / "base" / "magicmotion.json").is_file()
    pipe = load_pipeline(base=out / "base", controlnet=out / "stage2" / "controlnet", kind="box", device="cpu")
    weights = [p for m in (pipe.transformer, pipe.vae, pipe.controlnet) for p in m.parameters()]
    assert {p.device.type for p in weights} == {"cpu"} and {p.dtype for p in weights} == {torch.float32}
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")}
    assert tiny.main(argv[:-2] + ["--stage-steps", "3"]) == 0  # every phase's output is there: skipped
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")} == stamps


class _Recorder:
    """A stand-in transformer: records its inputs and returns `pred` (its config has the patch size)."""

    def __init__(self, pred, patch=(1, 2, 2)):
        self.pred, self.config, self.calls = pred, SimpleNamespace(patch_size=patch), []

    def __call__(self, hidden, timestep, encoder_hidden_states, return_dict):
        self.calls.append((hidden.clone(), timestep.clone()))
        return (self.pred,)


def _base_batch(seed=0, b=2, c=4, f=3, h=4, w=4):
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(b, c, f, h, w, generator=g), torch.randn(b, c, f, h, w, generator=g)
    sigma = torch.tensor([0.3, 0.8]).view(-1, 1, 1, 1, 1)
    return x0, noise, sigma, torch.randn(b, c, 1, h, w, generator=g), torch.randn(b, 5, 8, generator=g)


def test_ti2v_base_loss_keeps_the_first_frame_clean_and_out_of_the_loss():
    """Wan2.2 TI2V as diffusers runs it: frame 0 of the input is the image latent, its tokens have
    timestep 0, the others 1000 sigma; the loss is the mean over frames 1.. only."""
    x0, noise, sigma, cond, ctx = _base_batch()
    pred = torch.randn_like(x0)
    model = _Recorder(pred)
    loss = tiny.base_loss(model, x0, noise, sigma, cond, ctx, "ti2v")
    hidden, timestep = model.calls[0]
    xt = (1 - sigma) * x0 + sigma * noise
    torch.testing.assert_close(hidden[:, :, 0], cond[:, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(hidden[:, :, 1:], xt[:, :, 1:], rtol=0, atol=0)
    tokens = 2 * 2  # a 4x4 latent frame in (2, 2) patches
    assert timestep.shape == (2, 3 * tokens)
    assert (timestep[:, :tokens] == 0).all()
    torch.testing.assert_close(timestep[:, tokens:], (sigma.view(-1, 1) * 1000).expand(2, 2 * tokens))
    want = (pred - (noise - x0))[:, :, 1:].pow(2).mean()
    torch.testing.assert_close(loss, want)
    every_frame = (pred - (noise - x0)).pow(2).mean()  # the wrong variant: frame 0 in the loss
    assert not torch.allclose(every_frame, want)
    # frame 0's noise and prediction change nothing
    noise2, pred2 = noise.clone(), pred.clone()
    noise2[:, :, 0] += 5.0
    pred2[:, :, 0] -= 3.0
    again = tiny.base_loss(_Recorder(pred2), x0, noise2, sigma, cond, ctx, "ti2v")
    torch.testing.assert_close(again, loss)


def test_i2v_base_loss_concatenates_the_condition_and_noises_every_frame():
    x0, noise, sigma, _, ctx = _base_batch()
    cond = torch.randn(2, 8, 3, 4, 4)  # a 4-channel mask and the image latents, per frame
    pred = torch.randn_like(x0)
    model = _Recorder(pred)
    loss = tiny.base_loss(model, x0, noise, sigma, cond, ctx, "i2v")
    hidden, timestep = model.calls[0]
    torch.testing.assert_close(hidden, torch.cat([(1 - sigma) * x0 + sigma * noise, cond], 1), rtol=0, atol=0)
    torch.testing.assert_close(timestep, sigma.flatten() * 1000)
    torch.testing.assert_close(loss, (pred - (noise - x0)).pow(2).mean())


@pytest.mark.parametrize("conditioning", tiny.CONDITIONINGS)
def test_the_base_config_takes_what_its_conditioning_feeds_it(conditioning):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    config = tiny.base_config(conditioning)
    z = tiny.VAE_CONFIG["z_dim"]
    assert config["out_channels"] == z and config["in_channels"] == (z if conditioning == "ti2v" else 2 * z + 4)
    model = WanTransformer3DModel(**config)
    x0, noise = torch.randn(1, z, 2, 8, 8), torch.randn(1, z, 2, 8, 8)
    cond = torch.randn(1, z, 1, 8, 8) if conditioning == "ti2v" else torch.randn(1, z + 4, 2, 8, 8)
    loss = tiny.base_loss(model, x0, noise, torch.full((1, 1, 1, 1, 1), 0.5), cond,
                          torch.randn(1, 4, config["text_dim"]), conditioning)
    loss.backward()
    assert torch.isfinite(loss) and model.proj_out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="base conditioning 't2v'"):
        tiny.base_config("t2v")
