"""Train the shipped tiny MagicMotion from scratch on the synthetic world (`make tiny-model`).

Phases, each skipped when its output exists (so a re-run resumes):
  data   synthetic train set + a held-out set (magicmotion.data.synthetic)
  vae    a tiny AutoencoderKLWan, trained on synthetic frames and short clips
  base   a tiny Wan image-to-video transformer (no control) trained with flow matching to continue a
         first frame; saved with the VAE, a tiny UMT5 text encoder and a word tokenizer as a diffusers
         WanImageToVideoPipeline folder
  maps   the VAE fine-tuned for trajectory maps (box outlines), video latents held in place; the
         stage clips precomputed with it
  stages the three MagicMotion stages with `magicmotion.training.train` (configs/tiny/stage*.yaml),
         then shipped to --out
  examples  the bundled example (examples/) from a held-out clip
  ablations the paper's two ablations at this scale (configs/tiny/stage2-*.yaml)
  bench  MagicBench-style evaluation on the held-out clips, written to work/bench-report

`make tiny-model` runs the phases up to `examples` (the shipped weights, within 2 hours here);
`make tiny-bench` runs `ablations,bench` (the evidence in docs/tiny-model.md).

    python -m magicmotion.training.tiny --out src/magicmotion/assets/tiny --work runs/tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

SIZE = (64, 64)
FRAMES = 17
# x4 in space (not Wan's x8): a tiny Wan VAE with x8 learned only the mean colour in the time we have,
# while x4 keeps the objects. With (1, 2, 2) patches a latent frame is an 8x8 token grid (8x8 pixels a
# token); (1, 4, 4) patches (4x4 tokens of 16x16 pixels, smaller than most objects' paths) were 4x
# cheaper but never learned to move an object.
VAE_CONFIG = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
                  temperal_downsample=[True, True], scale_factor_spatial=4)
BASE_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=36,
                   out_channels=16, text_dim=32, freq_dim=64, ffn_dim=256, num_layers=6,
                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
                   rope_max_seq_len=64)
# Prompts of the synthetic world are at most 30 tokens; padding them to 64, not Wan's 512, makes a base
# step 1.6x faster (cross-attention over 512 tokens was a third of it). Saved as the tokenizer's
# model_max_length, which the pipelines read (`wan_text_length`).
TEXT_TOKENS = 64
TEXT_CONFIG = dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def log(msg: str) -> None:
    print(f"[tiny {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ data


def phase_data(work: Path, train_clips: int, test_clips: int) -> None:
    from ..data.synthetic import synthesize

    synthesize(work / "data" / "train", clips=train_clips, frames=FRAMES, size=SIZE, seed=1,
               test_fraction=0.0)
    synthesize(work / "data" / "heldout", clips=test_clips, frames=FRAMES, size=SIZE, seed=2,
               test_fraction=1.0)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def round_trip(vae, x: torch.Tensor) -> torch.Tensor:
    """x (B, 3, T, H, W) in [-1, 1] -> the VAE's reconstruction from its posterior's mode."""
    return vae.decode(vae.encode(x).latent_dist.mode()).sample


def latent_drift(vae, z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two latents after normalising by the VAE's `latents_std`."""
    inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=z.device).view(1, -1, 1, 1, 1)
    return ((z - z_ref) * inv_std).pow(2).mean()


def ema_update(ema: dict[str, float], key: str, value: float, decay: float = 0.98) -> None:
    """Exponential moving average of a logged value, started at its first value."""
    ema[key] = value if key not in ema else decay * ema[key] + (1 - decay) * value


# ------------------------------------------------------------------------------------------- vae


def world_clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n clips of the synthetic world in memory: frames uint8 (n, T, H, W, 3) and object labels
    int32 (n, T, H, W) (0 = background)."""
    from ..data.synthetic import SyntheticWorld

    world = SyntheticWorld(size=SIZE, num_frames=FRAMES)
    clips = [world.render(world.sample_scene(np.random.default_rng([seed, k]))) for k in range(n)]
    return np.stack([c[0] for c in clips]), np.stack([c[1] for c in clips])


def trajectory_maps(labels: np.ndarray, kind: str = "mask") -> np.ndarray:
    """Trajectory maps of label videos (..., T, H, W) (value = object id), rendered by the trajectory
    layer: uint8 (..., T, H, W, 3)."""
    from ..trajectory import from_label_masks, render

    flat = labels.reshape(-1, *labels.shape[-3:])
    out = np.zeros((*flat.shape, 3), dtype=np.uint8)
    for v, clip in enumerate(flat):
        if clip.any():
            out[v] = render(from_label_masks(clip), kind)
    return out.reshape(*labels.shape, 3)


def phase_vae(work: Path, steps: int, seed: int = 0, crop: int = 32, peak_lr: float = 1e-3) -> Path:
    """Train the tiny VAE as a deterministic autoencoder (the posterior's mode; the KL term is left
    out, latents are normalised afterwards by their measured mean and std) on random `crop` x `crop`
    crops: convolutions do not care about the frame size, and crops make a step 4x cheaper.

    Half the steps see whole 17-frame clips (the causal cache over every 4-frame chunk), a quarter
    single frames (the causal VAE encodes frame 0 alone), a quarter trajectory maps, mask and box
    (palette colours on black: the ControlNet's input and the segment head's target are VAE latents
    of such videos). Object pixels weigh 5x in the loss: objects are small, and a plain pixel loss
    spends the model on the background. Checkpoints every 500 steps under work/vae-ckpt.
    """
    from diffusers import AutoencoderKLWan

    out = work / "vae"
    if (out / "config.json").exists():
        return out
    videos, labels = world_clips(2000, seed=100)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = AutoencoderKLWan(**VAE_CONFIG)
    opt = torch.optim.Adam(vae.parameters(), lr=peak_lr)
    lr_scale = 1.0

    def lr_at(step: int) -> float:  # linear warm-up, then cosine down to a tenth
        if step < 100:
            return peak_lr * (step + 1) / 100
        return peak_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - 100) / max(1, steps - 100))))

    def crops(n: int, length: int, maps: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(0, len(videos), n)
        t = rng.integers(0, FRAMES - length + 1, n)
        y, x = rng.integers(0, SIZE[1] - crop + 1, n), rng.integers(0, SIZE[0] - crop + 1, n)
        box = [(i, slice(a, a + length), slice(b, b + crop), slice(c, c + crop)) for i, a, b, c in zip(idx, t, y, x)]
        lab = np.stack([labels[i, ts, ys, xs] for i, ts, ys, xs in box])
        pix = trajectory_maps(lab, maps) if maps else np.stack([videos[i, ts, ys, xs] for i, ts, ys, xs in box])
        weight = 1.0 + 4.0 * torch.from_numpy(lab > 0).float()[:, None]
        return to_tensor(pix), weight

    # A tiny causal VAE trained this hard sometimes collapses to the mean colour (the loss jumps and
    # stays up). Guard: keep the weights of the best window of 100 steps; when the window's loss is
    # 25% above the best, go back to them and halve the learning rate.
    best, good, window = math.inf, None, []
    bar = tqdm(range(steps), desc="vae")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step) * lr_scale
        kind = step % 8
        maps = "mask" if kind == 3 else "box" if kind == 7 else None
        x, w = crops(16, 1) if kind in (1, 5) else crops(2, FRAMES, maps)
        rec = round_trip(vae, x)
        err = (rec - x).pow(2) + 0.5 * (rec - x).abs()
        loss = (err * w).mean() / w.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if len(window) == 100:
            mean = sum(window) / len(window)
            window = []
            if mean < best:
                best = mean
                good = ({k: v.clone() for k, v in vae.state_dict().items()}, copy.deepcopy(opt.state_dict()))
            elif mean > 1.25 * best and good is not None:
                vae.load_state_dict(good[0])
                opt.load_state_dict(good[1])
                lr_scale *= 0.5
                log(f"vae: loss {mean:.4f} at step {step + 1} is above the best {best:.4f}: back to the best "
                    f"weights, learning rate x{lr_scale}")
            bar.set_postfix(loss=f"{mean:.4f}", best=f"{best:.4f}")
        if (step + 1) % 500 == 0:
            vae.save_pretrained(work / "vae-ckpt")
    if good is not None:
        vae.load_state_dict(good[0])
    vae.eval()
    with torch.no_grad():  # latent statistics for normalisation, over whole clips
        lat = torch.cat([vae.encode(to_tensor(videos[i:i + 8])).latent_dist.mode()
                         for i in range(0, 128, 8)])
        vae.register_to_config(latents_mean=lat.mean(dim=(0, 2, 3, 4)).tolist(),
                               latents_std=lat.std(dim=(0, 2, 3, 4)).tolist())
        x = to_tensor(videos[-8:])
        psnr = psnr_of(round_trip(vae, x), x)
        m = to_tensor(trajectory_maps(labels[-8:], "mask"))
        psnr_maps = psnr_of(round_trip(vae, m), m)
    tmp = work / "vae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp)
    tmp.rename(out)
    log(f"vae: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params, clip PSNR {psnr:.1f} dB, "
        f"mask maps {psnr_maps:.1f} dB")
    (work / "vae.json").write_text(json.dumps({"psnr_db": psnr, "mask_maps_psnr_db": psnr_maps, "steps": steps}))
    return out


def outline_recall(vae, labels: np.ndarray, kind: str) -> float:
    """The share of a trajectory map's drawn pixels (frames 1..T-1) that come back drawn after the
    VAE's round trip: how much of the trajectory its latents carry."""
    x = to_tensor(trajectory_maps(labels, kind))
    with torch.no_grad():
        y = round_trip(vae, x)
    drawn, back = (x.amax(1) > -0.8)[:, 1:], (y.amax(1) > -0.5)[:, 1:]
    return ((drawn & back).sum() / drawn.sum().clamp(min=1)).item()


def finetune_for_maps(old, videos: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0, crop: int = 32,
                      lr: float = 2e-4, anchor: float = 5.0):
    """A copy of the VAE `old` fine-tuned for trajectory maps, its video latents held to `old`'s.

    Map crops (3 box, 1 mask in 8 steps) are weighted 11x on their drawn pixels; video crops (every
    other step) keep their reconstruction loss plus `anchor` x the mean squared drift of their
    normalised latents from `old`'s. `videos` uint8 (N, T, H, W, 3) and `labels` (N, T, H, W) as
    `world_clips` returns them. Returns the new VAE in eval mode; `old` is left as it was.
    """
    old = old.eval().requires_grad_(False)
    vae = copy.deepcopy(old).train().requires_grad_(True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    height, width = videos.shape[2:4]
    bar = tqdm(range(steps), desc="vae maps")
    ema = {}
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        kind = None if step % 2 else ("mask" if step % 8 == 6 else "box")
        idx = rng.integers(0, len(videos), 2)
        y, x = rng.integers(0, height - crop + 1, 2), rng.integers(0, width - crop + 1, 2)
        lab = np.stack([labels[i, :, a:a + crop, b:b + crop] for i, a, b in zip(idx, y, x)])
        if kind:
            pix = trajectory_maps(lab, kind)
            w = 1.0 + 10.0 * torch.from_numpy(pix.max(-1) > 0).float()[:, None]
        else:
            pix = np.stack([videos[i, :, a:a + crop, b:b + crop] for i, a, b in zip(idx, y, x)])
            w = 1.0 + 4.0 * torch.from_numpy(lab > 0).float()[:, None]
        inp = to_tensor(pix)
        z = vae.encode(inp).latent_dist.mode()
        rec = vae.decode(z).sample
        err = (rec - inp).pow(2) + 0.5 * (rec - inp).abs()
        loss = (err * w).mean() / w.mean()
        if not kind:
            with torch.no_grad():
                z_old = old.encode(inp).latent_dist.mode()
            drift = latent_drift(vae, z, z_old)
            loss = loss + anchor * drift
            ema_update(ema, "drift", drift.item())
        ema_update(ema, kind or "video", loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix({k: f"{v:.4f}" for k, v in ema.items()})
    return vae.eval()


def phase_maps(work: Path, steps: int, seed: int = 0) -> Path:
    """Fine-tune the VAE for trajectory maps (`finetune_for_maps`), after the base is trained on its
    video latents.

    The VAE of phase `vae` keeps videos but drops most of a box map's one-pixel outlines (they are a
    twentieth of the pixels and weigh little in its loss): the ControlNet then sees almost nothing of
    a box trajectory. The fine-tune holds the video latents in place, so the base trained on them
    stays valid. Writes work/vae-maps, puts it into the base folder, then precomputes the stage clips
    with it (work/precomputed).
    """
    from diffusers import AutoencoderKLWan

    from .precompute import precompute

    out, pre = work / "vae-maps", work / "precomputed"
    if not (out / "config.json").exists():
        videos, labels = world_clips(2000, seed=100)
        held = world_clips(16, seed=999)[1]
        old = AutoencoderKLWan.from_pretrained(work / "vae").eval()
        before = {k: outline_recall(old, held, k) for k in ("mask", "box")}
        vae = finetune_for_maps(old, videos, labels, steps, seed=seed)
        after = {k: outline_recall(vae, held, k) for k in ("mask", "box")}
        x = to_tensor(videos[-8:])
        with torch.no_grad():
            z_old, z = old.encode(x).latent_dist.mode(), vae.encode(x).latent_dist.mode()
            psnr = psnr_of(vae.decode(z).sample, x)
            drift = latent_drift(vae, z, z_old).item()
        tmp = work / "vae-maps.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        vae.save_pretrained(tmp)
        tmp.rename(out)
        stats = {"steps": steps, "recall_before": before, "recall_after": after, "clip_psnr_db": psnr,
                 "video_latent_drift": drift}
        (work / "vae-maps.json").write_text(json.dumps(stats))
        log(f"vae maps: drawn pixels kept, mask {before['mask']:.2f} -> {after['mask']:.2f}, box "
            f"{before['box']:.2f} -> {after['box']:.2f}; clip PSNR {psnr:.1f} dB, video latent drift {drift:.4f}")
    base_vae = work / "base" / "vae"
    if not (pre / "index.json").exists():
        tmp = work / "base" / "vae.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out, tmp)
        shutil.rmtree(base_vae)
        tmp.rename(base_vae)
        precompute(stage_config("stage1", work), pre, kinds=["mask", "box", "sparse_box"])
    return out


def psnr_of(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


# ------------------------------------------------------------------------------------------ base


def text_components(seed: int = 0):
    """The word tokenizer over the synthetic world's vocabulary and a tiny (random, frozen) UMT5."""
    from transformers import UMT5Config, UMT5EncoderModel

    from ..data.synthetic import VOCABULARY
    from ..pipelines.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer(VOCABULARY, max_length=TEXT_TOKENS)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT_CONFIG)).eval()
    return tokenizer, text_encoder


def flow_sigmas(u: torch.Tensor, shift: float = 3.0) -> torch.Tensor:
    """Wan's shifted flow-matching sigmas from uniform u."""
    return shift * u / (1 + (shift - 1) * u)


def stage_subset(work: Path, clips: int) -> Path:
    """runs/tiny/data/stages: the first `clips` training clips (index lines; videos and annotations
    are links to the full set's folders)."""
    from ..data.dataset import read_index, write_index

    root = work / "data" / "stages"
    if (root / "index.jsonl").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    for name in ("videos", "annotations"):
        link = root / name
        if not link.exists():
            link.symlink_to(Path("..") / "train" / name)
    write_index(root, read_index(work / "data" / "train")[:clips])
    return root


def save_base(folder: Path, vae, transformer, seed: int = 0) -> None:
    """A diffusers WanImageToVideoPipeline folder: the VAE, the text encoder, the transformer."""
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    tokenizer, text_encoder = text_components(seed)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0, num_train_timesteps=1000)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   scheduler=scheduler, transformer=transformer, image_encoder=None,
                                   image_processor=None)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def load_precomputed(folder: Path) -> dict[str, torch.Tensor]:
    """Every clip of a `magicmotion train precompute` folder, stacked: latents, image_condition,
    prompt_embeds, and the empty prompt's embedding."""
    from safetensors.torch import load_file

    files = sorted((folder / "clips").glob("*.safetensors"))
    clips = [load_file(str(f)) for f in files]
    out = {k: torch.stack([c[k] for c in clips]).float()
           for k in ("latents", "image_condition", "prompt_embeds")}
    out["empty"] = load_file(str(folder / "empty_prompt.safetensors"))["prompt_embeds"].float()
    return out


def phase_base(work: Path, steps: int, clips: int = 1000, batch: int = 8, seed: int = 0) -> Path:
    """The I2V base: first a base folder with an untrained transformer (so that `magicmotion train
    precompute` encodes the stage clips with its VAE and text encoder), then the transformer trained
    with flow matching on those same precomputed latents (no trajectory), saved in place."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from .precompute import precompute

    out = work / "base"
    if (work / "base.json").exists():
        return out
    stage_subset(work, clips)
    vae = AutoencoderKLWan.from_pretrained(work / "vae").eval()
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**BASE_CONFIG)
    if not (out / "model_index.json").exists():
        save_base(out, vae, model, seed)
    pre = work / "precomputed-base"
    if not (pre / "index.json").exists():
        precompute(stage_config("stage1", work), pre, kinds=[])  # videos, first frames, prompts (and mask maps)
    data = load_precomputed(pre)
    latents, conds, texts = data["latents"], data["image_condition"], data["prompt_embeds"]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=steps, pct_start=0.03)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="base")
    ema: dict[str, float] = {}
    for _ in bar:
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        x0, cond, ctx = latents[idx], conds[idx], texts[idx].clone()
        # 10% empty captions, so that classifier-free guidance has an unconditional model
        drop = torch.rand(batch, generator=gen) < 0.1
        ctx[drop] = data["empty"].reshape(ctx.shape[1:]).to(ctx.dtype)
        noise = torch.randn(x0.shape, generator=gen)
        sigma = flow_sigmas(torch.rand(batch, generator=gen)).view(-1, 1, 1, 1, 1)
        xt = (1 - sigma) * x0 + sigma * noise
        pred = model(torch.cat([xt, cond], dim=1), timestep=sigma.flatten() * 1000,
                     encoder_hidden_states=ctx, return_dict=False)[0]
        loss = (pred - (noise - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema_update(ema, "loss", loss.item())
        bar.set_postfix(loss=f"{ema['loss']:.4f}")
    model.eval()
    tmp = out / "transformer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(out / "transformer")
    tmp.rename(out / "transformer")
    (work / "base.json").write_text(json.dumps({"final_loss_ema": ema["loss"], "steps": steps, "clips": len(latents)}))
    log(f"base: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, loss {ema['loss']:.4f}")
    return out


# ---------------------------------------------------------------------------------------- stages

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "tiny"
STAGES = ["stage1", "stage2", "stage3"]
ABLATIONS = ["stage2-from-scratch", "stage2-no-seg"]
PHASES = ["data", "vae", "base", "maps", "stages", "examples", "ablations", "bench"]


def stage_config(name: str, work: Path, steps: int | None = None):
    """configs/tiny/NAME.yaml with its base, data, output and init_from (the previous stage's
    output_dir, by its last folder name) moved under `work`."""
    from .config import load_config

    sets = [f"base={work / 'base'}", f"output_dir={work / name}",
            f"data.dataset={work / 'data' / 'stages'}", f"data.precomputed={work / 'precomputed'}"]
    cfg_path = CONFIGS / f"{name}.yaml"
    prev = load_config(cfg_path, check=False).init_from
    if prev:
        sets.append(f"init_from={work / Path(prev).name}")
    if steps:
        sets.append(f"loop.max_steps={steps}")
    return load_config(cfg_path, sets)


def phase_stages(work: Path, names: list[str], steps: int | None = None) -> None:
    from .trainer import train

    for name in names:
        if (work / name / "final" / "controlnet" / "config.json").exists():
            continue
        t0 = time.time()
        train(stage_config(name, work, steps))
        log(f"{name} trained in {time.time() - t0:.0f} s")


def ship(work: Path, out: Path) -> None:
    """Copy the base and the three stages into the package, weights stored in fp16 (loaded as fp32).

    The text encoder (48 KB) stays fp32: transformers loads a model in the dtype it was saved in, so
    an fp16 one would come back fp16 to anyone who loads the base by hand (diffusers models load fp32).
    """
    from diffusers import WanImageToVideoPipeline

    from ..models import SegmentHead, WanTrajectoryControlNet

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe = WanImageToVideoPipeline.from_pretrained(work / "base", dtype=torch.float32)
    pipe.transformer.half()
    pipe.save_pretrained(tmp / "base")
    for stage in STAGES:
        final = work / stage / "final"
        WanTrajectoryControlNet.from_pretrained(final / "controlnet").half().save_pretrained(
            tmp / stage / "controlnet")
        if (final / "segment_head" / "config.json").exists():
            SegmentHead.from_pretrained(final / "segment_head").half().save_pretrained(
                tmp / stage / "segment_head")
    card = Path(__file__).resolve().parents[3] / "docs" / "model-card-tiny.md"
    if card.is_file():
        shutil.copy(card, tmp / "README.md")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"shipped to {out} ({size / 2**20:.1f} MiB)")


# -------------------------------------------------------------------------------------- examples


def phase_examples(work: Path, examples: Path, clip_index: int = 3) -> None:
    """The bundled example: first frame, prompt and the three trajectory kinds of a held-out clip."""
    from .. import trajectory
    from ..data.dataset import Dataset
    from ..io import write_image

    ds = Dataset(work / "data" / "heldout", num_frames=FRAMES, sampling="start")
    clip = ds[clip_index]
    examples.mkdir(parents=True, exist_ok=True)
    write_image(examples / "first_frame.png", clip.frames[0])
    (examples / "prompt.txt").write_text(clip.caption + "\n")
    dense = clip.trajectory
    trajectory.save(dense, examples / "trajectory-mask.json")
    boxes = dense.copy()
    for o in boxes.objects:
        o.masks = {0: o.masks[0]} if 0 in o.masks else {}
    trajectory.save(boxes, examples / "trajectory-box.json")
    trajectory.save(trajectory.sparsify(dense, num_keys=3, mode="even"), examples / "trajectory-sparse.json")
    # what a user writes by hand: boxes on key frames 0, 8, 16 and a frame-0 mask PNG per object
    hand = trajectory.sparsify(dense, num_keys=2, mode="even")
    (examples / "masks").mkdir(exist_ok=True)
    data = trajectory.to_dict(hand)
    for o, od in zip(hand.objects, data["objects"]):
        name = f"masks/object{o.id}_0.png"
        write_image(examples / name, o.mask(0).astype(np.uint8) * 255)
        od["masks"] = {"0": name}
    (examples / "trajectory.json").write_text(json.dumps(data, indent=1) + "\n")
    from ..io import write_video
    write_video(examples / "source.mp4", clip.frames)


# ----------------------------------------------------------------------------------------- bench


def vae_round_trip(vae_dir: Path):
    """A bench generator (`run_bench(generate_fn=...)`) that returns each clip's own frames after a
    round trip through the VAE at `vae_dir`: the best any model on that VAE can score."""
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(vae_dir).eval()

    def generate(clip, trajectory) -> np.ndarray:
        x = to_tensor(np.asarray(clip.frames)[None])
        with torch.no_grad():
            y = round_trip(vae, x).clamp(-1, 1)
        return ((y[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()

    return generate


# The bench phase also scores every model with trajectory guidance (the pipelines'
# `trajectory_guidance_scale`; not in the paper, off by default), at this scale.
BENCH_TRAJECTORY_GUIDANCE = 2.0


def phase_bench(work: Path, model_dir: Path, docs: Path, steps: int = 20, per_bucket: int = 25) -> dict:
    """Held-out MagicBench-style evaluation of the shipped model, the ablations, the floor (control
    scale 0), the ceiling (ground-truth videos) and the VAE's ceiling (those videos through the VAE),
    written to work/bench-report (copied into docs/tiny-model/ by hand)."""
    from ..bench.report import report
    from ..bench.runner import run_bench
    from ..bench.score import score_run
    from ..bench.sets import build_bench
    from ..pipelines.loading import TINY_GUIDANCE

    bench = work / "bench"
    build_bench(work / "data" / "heldout", bench, per_bucket=per_bucket, num_frames=FRAMES,
                buckets=("1", "2", "3", "4", "5"))
    runs = work / "bench-runs"
    runs.mkdir(exist_ok=True)
    base = model_dir / "base"
    plan = [
        ("ground truth (ceiling)", "gt", dict(ground_truth=True, kind="box")),
        ("ground truth through the VAE", "vae", dict(generate_fn=vae_round_trip(base / "vae"), kind="box")),
        ("control scale 0 (floor)", "scale0", dict(controlnet=model_dir / "stage2" / "controlnet",
                                                   kind="box", control_scale=0.0)),
    ]
    models = [
        ("stage 1, mask", "stage1-mask", dict(controlnet=model_dir / "stage1" / "controlnet", kind="mask")),
        ("stage 2, box", "stage2-box", dict(controlnet=model_dir / "stage2" / "controlnet", kind="box")),
        ("stage 3, sparse box", "stage3-sparse", dict(controlnet=model_dir / "stage3" / "controlnet",
                                                      kind="sparse_box")),
        ("stage 2 w/o progressive training", "ablation-scratch",
         dict(controlnet=work / "stage2-from-scratch" / "final" / "controlnet", kind="box")),
        ("stage 2 w/o latent seg. loss", "ablation-noseg",
         dict(controlnet=work / "stage2-no-seg" / "final" / "controlnet", kind="box")),
    ]
    # each model as the paper samples it, then with trajectory guidance
    w = BENCH_TRAJECTORY_GUIDANCE
    plan += models
    plan += [(f"{label}, trajectory guidance {w:g}", f"{name}-tg", dict(kw, trajectory_guidance=w))
             for label, name, kw in models]
    done = []
    for label, name, kw in plan:
        if "controlnet" in kw and not Path(kw["controlnet"]).exists():
            log(f"bench: skipping {label} ({kw['controlnet']} missing)")
            continue
        run_bench(bench, runs / name, base=base, num_inference_steps=steps, guidance_scale=TINY_GUIDANCE,
                  seed=0, label=label, **kw)
        score_run(runs / name, segmenter="classic")
        done.append((label, runs / name))
        log(f"bench: {label} scored")
    return report([d for _, d in done], work / "bench-report", labels=[l for l, _ in done])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="src/magicmotion/assets/tiny")
    p.add_argument("--work", default="runs/tiny")
    p.add_argument("--phases", default=",".join(PHASES), help=f"a subset of {','.join(PHASES)}")
    p.add_argument("--train-clips", type=int, default=2000)
    p.add_argument("--test-clips", type=int, default=150)
    p.add_argument("--vae-steps", type=int, default=4000)
    p.add_argument("--base-steps", type=int, default=4500)
    p.add_argument("--maps-steps", type=int, default=1200)
    p.add_argument("--stage-steps", type=int, default=None, help="override every stage's max_steps")
    p.add_argument("--examples", default="examples")
    p.add_argument("--bench-steps", type=int, default=10)
    p.add_argument("--per-bucket", type=int, default=20)
    args = p.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    phases = args.phases.split(",")
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        p.error(f"unknown phase(s) {', '.join(unknown)}; the phases are {','.join(PHASES)}")
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()
    if "data" in phases:
        phase_data(work, args.train_clips, args.test_clips)
        log(f"data done ({time.time() - t0:.0f} s)")
    if "vae" in phases:
        phase_vae(work, args.vae_steps)
        log(f"vae done ({time.time() - t0:.0f} s)")
    if "base" in phases:
        phase_base(work, args.base_steps)
        log(f"base done ({time.time() - t0:.0f} s)")
    if "maps" in phases:
        phase_maps(work, args.maps_steps)
        log(f"maps done ({time.time() - t0:.0f} s)")
    if "stages" in phases:
        phase_stages(work, STAGES, args.stage_steps)
        ship(work, out)
        log(f"stages done ({time.time() - t0:.0f} s)")
    if "examples" in phases:
        phase_examples(work, Path(args.examples))
    if "ablations" in phases:
        phase_stages(work, ABLATIONS, args.stage_steps)
        log(f"ablations done ({time.time() - t0:.0f} s)")
    if "bench" in phases:
        phase_bench(work, out, Path("docs"), steps=args.bench_steps, per_bucket=args.per_bucket)
        log(f"bench done ({time.time() - t0:.0f} s): {work / 'bench-report'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
