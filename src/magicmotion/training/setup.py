"""Building a training run: the frozen base with the trainable ControlNet (and segment head) and
the data the loop reads (pixel clips encoded on the fly, or precomputed latents)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from ..limits import check_finite_weights
from .config import TrainConfig, init_weights


class TrainableModules(nn.Module):
    """The ControlNet and segment head as one module, the only one given to accelerate.

    The joint model (base + ControlNet + head) runs the forward, but the frozen base is not a
    registered submodule: it stays out of DDP / FSDP wrapping, the optimizer and checkpoints.
    """

    def __init__(self, joint):
        super().__init__()
        self.controlnet = joint.controlnet
        self.segment_head = joint.segment_head
        self.__dict__["joint"] = joint  # not registered

    @property
    def _no_split_modules(self) -> list[str]:
        """The ControlNet's block classes: FSDP's TRANSFORMER_BASED_WRAP wraps each block on its own."""
        return list(self.controlnet._no_split_modules)

    def forward(self, **kwargs):
        return self.joint(**kwargs, return_dict=False)


def build_models(config: TrainConfig, weight_dtype: torch.dtype = torch.float32):
    """(joint MagicMotionTransformer, base scheduler) for a config.

    The base is loaded in `weight_dtype` and frozen; the ControlNet starts from `init_from`'s
    ControlNet or as a copy of the base's blocks (`controlnet_layers` of them); the head from
    `init_from` (`init_head`) or freshly initialised. Trainable weights are float32.

    Wan2.2 I2V-A14B (`expert`): the base is that expert, `transformer` (high) or `transformer_2` (low),
    and a fresh ControlNet copies its blocks and records `expert` in its config. Wan2.2 TI2V: the
    ControlNet reads 48 + 48 channels and the head predicts 48-channel latents.
    """
    from ..models import (CogVideoXTrajectoryControlNet, MagicMotionTransformer, SegmentHead,
                          WanTrajectoryControlNet)
    from .config import check_base
    from .conditioning import load_base_components

    layout = check_base(config)
    name = "transformer_2" if config.expert == "low" else "transformer"
    parts = load_base_components(config.base, (name, "scheduler"), dtype=weight_dtype)
    base = parts[name]
    cls = WanTrajectoryControlNet if config.model == "wan" else CogVideoXTrajectoryControlNet
    if (config.model == "wan") != hasattr(base, "blocks"):
        raise ConfigError(f"{config.source}: model is {config.model} but {config.base} holds a "
                          f"{type(base).__name__}")
    head_dir = None
    if config.init_from:
        cn_dir, head_dir = init_weights(config)
        controlnet = check_finite_weights(cls.from_pretrained(cn_dir, dtype=torch.float32), cn_dir, ModelError)
        layers = controlnet.config.num_layers
        if config.controlnet_layers is not None and config.controlnet_layers != layers:
            raise ConfigError(f"{config.source}: controlnet_layers is {config.controlnet_layers} but "
                              f"{cn_dir} has {layers} control blocks")
    else:
        wan = dict(expert=config.expert, expand_timesteps=layout["expand_timesteps"]) if config.model == "wan" else {}
        controlnet = cls.from_transformer(base, num_layers=config.controlnet_layers, **wan)
    nn.Module.to(controlnet, torch.float32)  # float32 master weights (ModelMixin.to would warn)

    head = None
    if config.segment_head:
        if head_dir:
            head = check_finite_weights(SegmentHead.from_pretrained(head_dir, dtype=torch.float32), head_dir,
                                        ModelError)
        else:
            with torch.random.fork_rng(devices=[]):  # the same fresh head for the same seed
                torch.manual_seed(config.seed)
                head = SegmentHead.from_transformer(base, out_channels=_latent_channels(config, base))
        nn.Module.to(head, torch.float32)
        if head.config.out_channels != _latent_channels(config, base):
            raise ConfigError(f"{config.source}: the segment head of {head_dir} predicts {head.config.out_channels} "
                              f"latent channels; this base's latents have {_latent_channels(config, base)}")
    joint = MagicMotionTransformer(base, controlnet, head, freeze_base=True)
    base.eval()
    controlnet.train()
    if head is not None:
        # without the segmentation loss the head gets no gradient: freeze it, keep it as it is
        head.requires_grad_(config.lambda_seg > 0).train()
    return joint, parts["scheduler"]


def _latent_channels(config: TrainConfig, base) -> int:
    """Latent channels of the base's VAE: Wan 16 (Wan2.2 TI2V 48), CogVideoX 16."""
    return int(base.config.out_channels or 16) if config.model == "wan" else 16


def build_data(config: TrainConfig, device: torch.device):
    """(torch dataset, LatentEncoder or None): precomputed latents, or clips encoded on the fly."""
    from .data import ClipConditions, PrecomputedIndex, PrecomputedLatents

    d = config.data
    if d.precomputed:
        index = PrecomputedIndex.read(d.precomputed)
        index.check_fits(config)
        dataset = PrecomputedLatents(index, config.condition, config.needs_mask_latents,
                                     d.image_dropout, d.caption_dropout)
        return dataset, None
    from ..data.reader import Dataset
    from .conditioning import (LatentEncoder, encoder_dtypes, encoder_names, load_base_components,
                               load_transformer_config)

    clips = Dataset(d.dataset, num_frames=d.num_frames, stride=d.stride, size=tuple(d.size),
                    sampling=d.sampling, split=d.split, seed=config.seed, pad=d.pad)
    if len(clips) == 0:
        raise ConfigError(f"{config.source}: data.dataset {d.dataset} has no clips in split {d.split!r}")
    dataset = ClipConditions(clips, config.condition, config.needs_mask_latents, d.sparse_max_keys,
                             d.image_dropout, d.caption_dropout)
    components = load_base_components(config.base, encoder_names(config.model), dtypes=encoder_dtypes(device))
    encoder = LatentEncoder(config.model, components, load_transformer_config(config.base, config.model), device,
                            expand_timesteps=uses_expand_timesteps(config))
    return dataset, encoder


def uses_expand_timesteps(config: TrainConfig) -> bool:
    from .conditioning import base_layout

    return config.model == "wan" and base_layout(config.base)["expand_timesteps"]


def to_device(batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out
