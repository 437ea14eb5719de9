"""Train the shipped tiny MagicMotion from scratch on the synthetic world (`make tiny-model`).

Phases, each skipped when its output exists (so a re-run resumes):
  data   synthetic train set + a held-out set (magicmotion.data.synthetic)
  vae    a tiny AutoencoderKLWan, trained on synthetic frames and short clips
  base   a tiny Wan image-to-video transformer (no control) trained with flow matching to continue a
         first frame (by default as Wan2.2 TI2V: the first latent frame in clean); saved with the VAE,
         a tiny UMT5 text encoder and a word tokenizer as a diffusers WanImageToVideoPipeline folder
  maps   the VAE fine-tuned for trajectory maps (box outlines), video latents held in place; the
         stage clips precomputed with it
  stages the three MagicMotion stages with `magicmotion.training.train` (configs/tiny/stage*.yaml),
         then shipped to --out
  examples  the bundled example (examples/) from a held-out clip
  ablations the paper's two ablations at this scale (configs/tiny/stage2-*.yaml)
  bench  MagicBench-style evaluation on the held-out clips, written to work/bench-report

`make tiny-model` runs the phases up to `examples` (the shipped weights, within 2 hours here);
`make tiny-bench` runs `ablations,bench` (the evidence in docs/tiny-model.md).

    python -m magicmotion.training.tiny --out src/magicmotion/assets/tiny --work runs/tiny [--device cuda]

--device (default cpu) puts every phase on that device; the weights are saved from the CPU, a drop-in
for the shipped ones (`make tiny-model DEVICE=cuda`).
"""

from .base import (base_loss, flow_sigmas, load_precomputed, phase_base, phase_data, save_base, stage_subset,
                   text_components)
from .bench import phase_bench, vae_round_trip
from .common import (BASE_CONDITIONING, BASE_CONFIG, CONDITIONINGS, CONFIGS, FRAMES, PHASES, SIZE, STAGES,
                     TEXT_CONFIG, TEXT_TOKENS, VAE_CONFIG, accelerate_device, base_config, ema_update, latent_drift,
                     log, psnr_of, recipe_device, round_trip, to_tensor, trajectory_maps, world_clips)
from .recipe import main
from .stages import ABLATIONS, phase_examples, phase_stages, ship, stage_config
from .vae import finetune_for_maps, outline_recall, phase_maps, phase_vae

__all__ = ["ABLATIONS", "BASE_CONDITIONING", "BASE_CONFIG", "CONDITIONINGS", "CONFIGS", "FRAMES", "SIZE", "STAGES",
           "TEXT_CONFIG", "TEXT_TOKENS", "VAE_CONFIG", "accelerate_device", "base_config", "base_loss", "ema_update",
           "finetune_for_maps", "flow_sigmas", "latent_drift",
           "load_precomputed", "log", "outline_recall", "phase_base", "phase_bench", "phase_data",
           "phase_examples", "phase_maps", "phase_stages", "phase_vae", "psnr_of", "recipe_device", "round_trip",
           "save_base", "ship", "stage_config", "stage_subset", "text_components", "to_tensor",
           "trajectory_maps", "vae_round_trip", "world_clips", "PHASES", "main"]
