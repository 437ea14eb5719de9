"""A training config checked against the folders it names: the base (its expert layout and token
grid), the previous stage's weights (`init_from`), and, where the dataset is missing, how to make it.

`check_config(files=True)` (in `training.config`) runs these; the trainer runs `check_base` again once
a hub base is at hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig


def check_base(config: TrainConfig) -> dict:
    """The settings of a Wan base that a config must agree with (`conditioning.base_layout`), checked:
    `expert` is required for a two-expert Wan2.2 I2V-A14B base and refused for a one-expert base, and
    `data.size` fits the base's token grid (Wan2.2 TI2V: multiples of 32 = VAE x16 times patch 2).
    Returns the layout ({} for CogVideoX)."""
    from .conditioning import base_layout

    src = config.source or "<config>"
    if config.model != "wan":
        return {}
    layout = base_layout(config.base)
    if layout["two_experts"] and config.expert is None:
        raise ConfigError(
            f"{src}: expert is missing: {config.base} is a two-expert Wan2.2 A14B base (transformer for high "
            f"noise, transformer_2 for low noise, boundary_ratio {layout['boundary_ratio']}); a run trains one "
            "expert's ControlNet: set expert: high or expert: low (--set expert=low)")
    if not layout["two_experts"] and config.expert is not None:
        raise ConfigError(f"{src}: expert is {config.expert!r} but {config.base} has one transformer (no "
                          "transformer_2 / boundary_ratio): remove expert")
    if layout["expand_timesteps"] and config.data.num_frames < 5:
        raise ConfigError(f"{src}: data.num_frames must be at least 5 for the Wan2.2 TI2V base {config.base}: its "
                          f"first latent frame is the clean image, the loss is on the later ones; got "
                          f"{config.data.num_frames}")
    step = layout["size_multiple"]
    if any(v % step for v in config.data.size):
        raise ConfigError(f"{src}: data.size must be [W, H], both multiples of {step} for {config.base} (VAE x"
                          f"{layout['vae_spatial']} times patch {step // layout['vae_spatial']}), got "
                          f"{list(config.data.size)}")
    return layout


def make_data_hint(config: TrainConfig) -> str:
    """How to make the config's missing dataset: the exact `magicmotion data synth` command for
    synthetic clips that fit it, or curation of real videos."""
    d = config.data
    frames = (d.num_frames - 1) * d.stride + 1
    synth = (f"magicmotion data synth --out {d.dataset} --clips 100 --frames {frames} "
             f"--size {d.size[0]}x{d.size[1]} --seed 0")
    return (f"make synthetic clips that fit this config with `{synth}`, or curate your own videos "
            f"into it (`magicmotion data curate VIDEOS --out {d.dataset} --clip-frames {frames}`, "
            "docs/data-pipeline.md)")


def init_weights(config: TrainConfig) -> tuple[Path, Path | None]:
    """(ControlNet folder, segment head folder or None) that `init_from` points to.

    `init_from` may be a previous stage's output_dir (its `final/`), a checkpoint folder, or any
    folder holding `controlnet/` (and `segment_head/`), such as the shipped tiny model's `stage1/`.
    """
    src = config.source or "<config>"
    root = Path(config.init_from)
    previous = f"stage {config.stage - 1}" if config.stage > 1 else "the previous run"
    candidates = [root / "final", root] + ([root.parent] if root.name == "controlnet" else [])
    for folder in candidates:
        if (folder / "controlnet" / "config.json").is_file():
            head = folder / "segment_head"
            if config.init_head and not (head / "config.json").is_file():
                raise ConfigError(
                    f"{src}: init_head is true but {previous}'s output {folder} has no segment_head/ "
                    f"(was it trained with segment_head: true?)"
                )
            _check_classes(folder / "controlnet", "ControlNet")
            _check_expert(config, folder / "controlnet", previous)
            if config.init_head:
                _check_classes(head, "segment head")
            return folder / "controlnet", (head if config.init_head else None)
    sibling = Path(src).parent / f"stage{config.stage - 1}.yaml"
    how = f" (`magicmotion train --config {sibling}`)" if config.stage > 1 and sibling.is_file() else ""
    raise ConfigError(
        f"{src}: init_from: {previous}'s output is missing: no ControlNet at {root / 'final' / 'controlnet'} "
        f"(train {previous} first{how}, or set init_from: null to start from the base)"
    )


def _check_expert(config: TrainConfig, folder: Path, previous: str) -> None:
    """A stage of one A14B expert starts from that expert's ControlNet (its config's `expert`)."""
    from ..errors import ModelError
    from ..limits import read_json

    theirs = read_json(folder / "config.json", ModelError, "model config").get("expert")
    if theirs != config.expert:
        name = lambda e: f"the {e}-noise expert's" if e else "a one-expert base's"  # noqa: E731
        raise ConfigError(f"{config.source or '<config>'}: init_from: {previous}'s ControlNet {folder} is "
                          f"{name(theirs)} but this run trains {name(config.expert)} (expert: "
                          f"{config.expert or 'null'}): chain each expert's stages on their own")


def _check_classes(folder: Path, what: str) -> None:
    """A weights folder's config.json names a class we load (models/allowed.py)."""
    from ..errors import ModelError
    from ..limits import read_json
    from ..models.allowed import check_model_config

    check_model_config(read_json(folder / "config.json", ModelError, "model config"), folder, what)
