"""Phases `data` and `base`: the synthetic train and held-out sets, and the tiny Wan image-to-video
base trained with flow matching (no control), saved as a diffusers pipeline folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from .common import BASE_CONFIG, FRAMES, SIZE, TEXT_CONFIG, TEXT_TOKENS, ema_update, log
from .stages import stage_config


def phase_data(work: Path, train_clips: int, test_clips: int) -> None:
    from ...data.synthetic import synthesize

    synthesize(work / "data" / "train", clips=train_clips, frames=FRAMES, size=SIZE, seed=1,
               test_fraction=0.0)
    synthesize(work / "data" / "heldout", clips=test_clips, frames=FRAMES, size=SIZE, seed=2,
               test_fraction=1.0)


def text_components(seed: int = 0):
    """The word tokenizer over the synthetic world's vocabulary and a tiny (random, frozen) UMT5."""
    from transformers import UMT5Config, UMT5EncoderModel

    from ...data.synthetic import VOCABULARY
    from ...pipelines.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer(VOCABULARY, max_length=TEXT_TOKENS)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT_CONFIG)).eval()
    return tokenizer, text_encoder


def flow_sigmas(u: torch.Tensor, shift: float = 3.0) -> torch.Tensor:
    """Wan's shifted flow-matching sigmas from uniform u."""
    return shift * u / (1 + (shift - 1) * u)


def stage_subset(work: Path, clips: int) -> Path:
    """runs/tiny/data/stages: the first `clips` training clips (index lines; each clip's video and
    annotation a hard link to the full set's file, a copy across file systems: the dataset reader
    refuses symbolic links that lead out of a dataset's folder)."""
    import os

    from ...data.dataset import read_index, write_index

    root = work / "data" / "stages"
    if (root / "index.jsonl").exists():
        return root
    train = work / "data" / "train"
    records = read_index(train)[:clips]
    for name in ("videos", "annotations"):
        if (root / name).is_symlink():  # a folder link left by an older recipe
            (root / name).unlink()
    for r in records:
        for key in ("video", "annotation"):
            if not r.get(key):
                continue
            src, dst = train / r[key], root / r[key]
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    write_index(root, records)
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


def phase_base(work: Path, steps: int, clips: int = 1000, batch: int = 8, seed: int = 0,
               device: torch.device | str = "cpu") -> Path:
    """The I2V base: first a base folder with an untrained transformer (so that `magicmotion train
    precompute` encodes the stage clips with its VAE and text encoder), then the transformer trained
    with flow matching on those same precomputed latents (no trajectory), saved in place.

    The precompute, the transformer and each batch run on `device`; the weights are initialised and
    every batch, noise and timestep drawn on the CPU (a CPU generator), so a run draws the same on
    every device. Saved from the CPU."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from ..precompute import precompute

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
        # videos, first frames, prompts (and mask maps)
        precompute(stage_config("stage1", work), pre, kinds=[], device=str(device))
    data = load_precomputed(pre)
    latents, conds, texts = data["latents"], data["image_condition"], data["prompt_embeds"]
    model.to(device)
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
        xt, x0, noise, cond, ctx, sigma = (t.to(device) for t in (xt, x0, noise, cond, ctx, sigma))
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
    model.eval().to("cpu")
    tmp = out / "transformer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(out / "transformer")
    tmp.rename(out / "transformer")
    (work / "base.json").write_text(json.dumps({"final_loss_ema": ema["loss"], "steps": steps, "clips": len(latents)}))
    log(f"base: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, loss {ema['loss']:.4f}")
    return out
