"""Training: the dense-to-sparse stages of MagicMotion on accelerate (configs, losses, data, the loop and
its parts, the memory plan, the tiny-model recipe).

Names are imported lazily so that `magicmotion --help` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "load_config": "config",
    "from_dict": "config",
    "save_config": "config",
    "flow_matching_loss": "losses",
    "v_prediction_loss": "losses",
    "latent_segmentation_loss": "losses",
    "sample_flow_sigmas": "losses",
    "total_loss": "losses",
    "ClipConditions": "data",
    "PrecomputedLatents": "data",
    "ResumableSampler": "data",
    "LatentEncoder": "conditioning",
    "precompute": "precompute",
    "train": "trainer",
    "build_models": "setup",
    "TrainingObjective": "objective",
    "TrainResult": "checkpoints",
    "latest_checkpoint": "checkpoints",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoints import TrainResult, latest_checkpoint
    from .conditioning import LatentEncoder
    from .config import TrainConfig, from_dict, load_config, save_config
    from .data import ClipConditions, PrecomputedLatents, ResumableSampler
    from .losses import (flow_matching_loss, latent_segmentation_loss, sample_flow_sigmas, total_loss,
                         v_prediction_loss)
    from .objective import TrainingObjective
    from .precompute import precompute
    from .setup import build_models
    from .trainer import train

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
