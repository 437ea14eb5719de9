"""Phases `vae` and `maps`: the tiny VAE, trained on synthetic frames and short clips, then fine-tuned
for trajectory maps (box outlines) with the video latents held in place."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .common import (FRAMES, SIZE, VAE_CONFIG, ema_update, latent_drift, log, psnr_of, round_trip, to_tensor,
                     trajectory_maps, world_clips)
from .stages import stage_config


def phase_vae(work: Path, steps: int, seed: int = 0, crop: int = 32, peak_lr: float = 1e-3, clips: int = 2000,
              device: torch.device | str = "cpu") -> Path:
    """Train the tiny VAE as a deterministic autoencoder (the posterior's mode; the KL term is left
    out, latents are normalised afterwards by their measured mean and std) on random `crop` x `crop`
    crops: convolutions do not care about the frame size, and crops make a step 4x cheaper.

    Half the steps see whole 17-frame clips (the causal cache over every 4-frame chunk), a quarter
    single frames (the causal VAE encodes frame 0 alone), a quarter trajectory maps, mask and box
    (palette colours on black: the ControlNet's input and the segment head's target are VAE latents
    of such videos). Object pixels weigh 5x in the loss: objects are small, and a plain pixel loss
    spends the model on the background. Checkpoints every 500 steps under work/vae-ckpt.

    The model and each batch are on `device`; the weights are initialised and the crops drawn on the
    CPU (numpy), so a run draws the same on every device. Saved from the CPU.
    """
    from diffusers import AutoencoderKLWan

    out = work / "vae"
    if (out / "config.json").exists():
        return out
    videos, labels = world_clips(clips, seed=100)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = AutoencoderKLWan(**VAE_CONFIG).to(device)
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
        return to_tensor(pix).to(device), weight.to(device)

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
            vae.to("cpu").save_pretrained(work / "vae-ckpt")
            vae.to(device)
    if good is not None:
        vae.load_state_dict(good[0])
    vae.eval()
    with torch.no_grad():  # latent statistics for normalisation, over whole clips
        lat = torch.cat([vae.encode(to_tensor(videos[i:i + 8]).to(device)).latent_dist.mode()
                         for i in range(0, min(128, len(videos)), 8)])
        vae.register_to_config(latents_mean=lat.mean(dim=(0, 2, 3, 4)).tolist(),
                               latents_std=lat.std(dim=(0, 2, 3, 4)).tolist())
        x = to_tensor(videos[-8:]).to(device)
        psnr = psnr_of(round_trip(vae, x), x)
        m = to_tensor(trajectory_maps(labels[-8:], "mask")).to(device)
        psnr_maps = psnr_of(round_trip(vae, m), m)
    tmp = work / "vae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae.to("cpu").save_pretrained(tmp)
    tmp.rename(out)
    log(f"vae: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params, clip PSNR {psnr:.1f} dB, "
        f"mask maps {psnr_maps:.1f} dB")
    (work / "vae.json").write_text(json.dumps({"psnr_db": psnr, "mask_maps_psnr_db": psnr_maps, "steps": steps}))
    return out


def outline_recall(vae, labels: np.ndarray, kind: str) -> float:
    """The share of a trajectory map's drawn pixels (frames 1..T-1) that come back drawn after the
    VAE's round trip: how much of the trajectory its latents carry."""
    params = getattr(vae, "parameters", None)
    first = next(iter(params()), None) if params else None
    x = to_tensor(trajectory_maps(labels, kind)).to(first.device if first is not None else "cpu")
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
    `world_clips` returns them. Runs on `old`'s device. Returns the new VAE in eval mode; `old` is
    left as it was.
    """
    old = old.eval().requires_grad_(False)
    vae = copy.deepcopy(old).train().requires_grad_(True)
    device = next(old.parameters()).device
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
        inp, w = to_tensor(pix).to(device), w.to(device)
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


def phase_maps(work: Path, steps: int, seed: int = 0, clips: int = 2000,
               device: torch.device | str = "cpu") -> Path:
    """Fine-tune the VAE for trajectory maps (`finetune_for_maps`), after the base is trained on its
    video latents.

    The VAE of phase `vae` keeps videos but drops most of a box map's one-pixel outlines (they are a
    twentieth of the pixels and weigh little in its loss): the ControlNet then sees almost nothing of
    a box trajectory. The fine-tune holds the video latents in place, so the base trained on them
    stays valid. Writes work/vae-maps, puts it into the base folder, then precomputes the stage clips
    with it (work/precomputed). Trains and precomputes on `device`; saved from the CPU.
    """
    from diffusers import AutoencoderKLWan

    from ..precompute import precompute

    out, pre = work / "vae-maps", work / "precomputed"
    if not (out / "config.json").exists():
        videos, labels = world_clips(clips, seed=100)
        held = world_clips(min(16, clips), seed=999)[1]
        old = AutoencoderKLWan.from_pretrained(work / "vae").eval().to(device)
        before = {k: outline_recall(old, held, k) for k in ("mask", "box")}
        vae = finetune_for_maps(old, videos, labels, steps, seed=seed)
        after = {k: outline_recall(vae, held, k) for k in ("mask", "box")}
        x = to_tensor(videos[-8:]).to(device)
        with torch.no_grad():
            z_old, z = old.encode(x).latent_dist.mode(), vae.encode(x).latent_dist.mode()
            psnr = psnr_of(vae.decode(z).sample, x)
            drift = latent_drift(vae, z, z_old).item()
        tmp = work / "vae-maps.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        vae.to("cpu").save_pretrained(tmp)
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
        precompute(stage_config("stage1", work), pre, kinds=["mask", "box", "sparse_box"], device=str(device))
    return out
