"""Phases `data` and `base`: the synthetic train and held-out sets, and the tiny Wan image-to-video
base trained with flow matching (no control), saved as a diffusers pipeline folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from .common import BASE_CONDITIONING, FRAMES, SIZE, TEXT_CONFIG, TEXT_TOKENS, base_config, ema_update, log
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


def save_base(folder: Path, vae, transformer, seed: int = 0, expand_timesteps: bool = False) -> None:
    """A diffusers WanImageToVideoPipeline folder: the VAE, the text encoder, the transformer
    (`expand_timesteps`: a Wan2.2 TI2V-style base, the first frame in clean)."""
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    tokenizer, text_encoder = text_components(seed)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0, num_train_timesteps=1000)
    pipe = WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                   scheduler=scheduler, transformer=transformer, image_encoder=None,
                                   image_processor=None, expand_timesteps=expand_timesteps)
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


def base_loss(model, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
              ctx: torch.Tensor, conditioning: str = BASE_CONDITIONING) -> torch.Tensor:
    """The flow-matching loss of one batch of the base (no trajectory): x0, noise (B, C, F, h, w), sigma
    (B, 1, 1, 1, 1), cond the precomputed image condition, ctx the text embeddings.

    "ti2v": the first latent frame replaced by the clean image latents, one timestep per token (0 on that
    frame), the loss over the other frames (`ti2v_inputs`, as the trainer and diffusers' pipeline).
    "i2v": x_t concatenated with the condition (mask and image latents), every frame in the loss."""
    from ..conditioning import first_frame_keep, ti2v_inputs
    from ..losses import flow_matching_loss

    xt = (1 - sigma) * x0 + sigma * noise
    timestep, keep = sigma.flatten() * 1000, None
    if conditioning == "ti2v":
        keep = first_frame_keep(x0)
        hidden, timestep = ti2v_inputs(xt, cond, keep, timestep, model.config.patch_size)
    else:
        hidden = torch.cat([xt, cond], dim=1)
    pred = model(hidden, timestep=timestep, encoder_hidden_states=ctx, return_dict=False)[0]
    return flow_matching_loss(pred, x0, noise, keep)


def phase_base(work: Path, steps: int, clips: int = 1000, batch: int = 8, seed: int = 0,
               device: torch.device | str = "cpu", conditioning: str = BASE_CONDITIONING) -> Path:
    """The image-to-video base: first a base folder with an untrained transformer (so that `magicmotion
    train precompute` encodes the stage clips with its VAE and text encoder), then the transformer trained
    with flow matching on those same precomputed latents (no trajectory), saved in place.

    `conditioning` "ti2v" (Wan2.2 TI2V-5B, `expand_timesteps`): the first latent frame goes in as the
    clean image latents with timestep 0 on its tokens, and the loss is over the other frames, as the
    trainer's objective and the pipeline run such a base. "i2v" (Wan2.1 I2V): the noisy latents
    concatenated with a mask and the image condition, every frame noised and in the loss.

    The precompute, the transformer and each batch run on `device`; the weights are initialised and
    every batch, noise and timestep drawn on the CPU (a CPU generator), so a run draws the same on
    every device. Saved from the CPU."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from ..precompute import precompute

    out = work / "base"
    if (work / "base.json").exists():
        return out
    config = base_config(conditioning)
    stage_subset(work, clips)
    vae = AutoencoderKLWan.from_pretrained(work / "vae").eval()
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**config)
    if not (out / "model_index.json").exists():
        save_base(out, vae, model, seed, expand_timesteps=conditioning == "ti2v")
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
        x0, noise, cond, ctx, sigma = (t.to(device) for t in (x0, noise, cond, ctx, sigma))
        loss = base_loss(model, x0, noise, sigma, cond, ctx, conditioning)
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
    (work / "base.json").write_text(json.dumps({"final_loss_ema": ema["loss"], "steps": steps, "clips": len(latents),
                                                "conditioning": conditioning}))
    log(f"base ({conditioning}): {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
        f"loss {ema['loss']:.4f}")
    return out
