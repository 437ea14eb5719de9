"""Import the released MagicMotion checkpoints (CogVideoX, `.pt` pickles) and write safetensors.

The release stores `{"state_dict": {...}}` with un-prefixed keys: ControlNet `patch_embed.*`,
`time_embedding.*`, `transformer_blocks.N.*` (diffusers `CogVideoXBlock` names), `out_projectors.N.*`
(1x1 convs, weight (D, D, 1, 1)); segment head `convs.N.0.*`, `convs.N.1.*`, `conv_out.*`.
Files are read with `torch.load(..., weights_only=True)`: a pickle that needs code is refused.
The number of control blocks is counted from the `transformer_blocks.N.` keys, so only the trained
blocks are instantiated (the release builds all 42 but its file holds fewer).

A whole release folder (`ckpts/stage1/mask.pt`, `stage2/box.pt` + `box_perception_head.pt`,
`stage3/sparse_box.pt` + `sparse_box_perception_head.pt`) converts in one call
(`convert_official_release`) to the layout of the shipped tiny model: `stageN/controlnet`,
`stageN/segment_head`, and `stageN/magicmotion.json` with the release's settings (`release_settings`).
`resolve_controlnet_for_kind` finds the ControlNet for a trajectory kind in either layout.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .casting import cast_like

# Transformer config of THUDM/CogVideoX-5b-I2V (diffusers layout), the release's base.
COGVIDEOX_5B_I2V_CONFIG: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 64,
    "dropout": 0.0,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 32,
    "max_text_seq_length": 226,
    "norm_elementwise_affine": True,
    "norm_eps": 1e-05,
    "num_attention_heads": 48,
    "num_layers": 42,
    "out_channels": 16,
    "patch_size": 2,
    "patch_size_t": None,
    "sample_frames": 49,
    "sample_height": 60,
    "sample_width": 90,
    "spatial_interpolation_scale": 1.875,
    "temporal_compression_ratio": 4,
    "temporal_interpolation_scale": 1.0,
    "text_embed_dim": 4096,
    "time_embed_dim": 512,
    "timestep_activation_fn": "silu",
    "use_learned_positional_embeddings": True,
    "use_rotary_positional_embeddings": True,
}

_BLOCK_KEY = re.compile(r"^transformer_blocks\.(\d+)\.")
_HEAD_KEY = re.compile(r"^convs\.(\d+)\.")


@dataclass
class ConversionReport:
    """What `load_official_checkpoint` found: sizes, and keys that did not map (by name)."""

    source: str
    num_control_blocks: int
    inner_dim: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_source: str | None = None
    head_num_blocks: int | None = None
    head_missing: list[str] = field(default_factory=list)
    head_unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.num_control_blocks} control blocks of width {self.inner_dim}"]
        lines += _key_lines("missing (left at initial values)", self.missing)
        lines += _key_lines("unexpected (ignored)", self.unexpected)
        if self.head_source:
            lines.append(f"{self.head_source}: segment head over {self.head_num_blocks} blocks")
            lines += _key_lines("missing (left at initial values)", self.head_missing)
            lines += _key_lines("unexpected (ignored)", self.head_unexpected)
        return "\n".join(lines)


def _key_lines(what: str, keys: list[str]) -> list[str]:
    if not keys:
        return []
    return [f"  {len(keys)} {what}:"] + [f"    {k}" for k in keys]


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A `.pt` state dict (bare, or under "state_dict" / "module"), loaded with weights_only=True."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"{path}: refused: the pickle needs code to load (torch.load weights_only=True allows tensors "
            f"and plain containers only): {first}"
        ) from None
    except Exception as e:  # noqa: BLE001 - a corrupt or truncated file fails in many ways (IndexError, KeyError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(
            f"{path}: unreadable checkpoint, corrupt or truncated? ({type(e).__name__}: {first})"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "module"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ModelError(f"{path}: not a state dict (expected a dict of named tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path}: holds no tensors")
    # strip a "module." prefix left by DistributedDataParallel
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _base_config(base_config: dict | str | os.PathLike | None) -> dict[str, Any]:
    if base_config is None:
        return dict(COGVIDEOX_5B_I2V_CONFIG)
    if isinstance(base_config, dict):
        return {**COGVIDEOX_5B_I2V_CONFIG, **base_config}
    path = Path(base_config)
    if path.is_dir() and not (path / "config.json").is_file() and (path / "transformer" / "config.json").is_file():
        path = path / "transformer"  # a base pipeline folder
    if path.is_dir():
        path = path / "config.json"
    try:
        return {**COGVIDEOX_5B_I2V_CONFIG, **json.loads(path.read_text())}
    except FileNotFoundError:
        raise ModelError(f"{path}: base transformer config not found") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not a JSON config ({e})") from None


def _checkpoint_dtype(sd: dict):
    """The floating dtype most of the checkpoint's tensors have (the converted model keeps it)."""
    from collections import Counter

    counts = Counter(v.dtype for v in sd.values() if v.is_floating_point())
    return counts.most_common(1)[0][0]


def _shape(sd: dict, key: str, path: Path) -> tuple[int, ...]:
    if key not in sd:
        raise ModelError(f"{path}: no {key!r} in the state dict; is this a MagicMotion ControlNet checkpoint?")
    return tuple(sd[key].shape)


def controlnet_from_state_dict(sd: dict, base_config: dict | str | os.PathLike | None = None, source: str = "?"):
    """Build a `CogVideoXTrajectoryControlNet` for a released-layout state dict and load it.

    Returns (controlnet, report). Block count and sizes come from the tensors; heads and the rest from
    `base_config` (default: CogVideoX-5B-I2V). The config records `trajectory_palette="release"` and
    `source="MagicMotion release <stageN/file.pt>"`.
    """
    from .controlnet_cogvideox import CogVideoXTrajectoryControlNet

    path = Path(source)
    cfg = _base_config(base_config)
    if cfg.get("_class_name", "CogVideoXTransformer3DModel") != "CogVideoXTransformer3DModel":
        raise ModelError(
            f"{path}: released checkpoints are CogVideoX ControlNets; the base config is a {cfg['_class_name']}"
        )
    blocks = {int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))}
    if not blocks:
        raise ModelError(f"{path}: no transformer_blocks.N keys; is this a MagicMotion ControlNet checkpoint?")
    num_blocks = max(blocks) + 1
    gaps = sorted(set(range(num_blocks)) - blocks)
    if gaps:
        raise ModelError(f"{path}: control blocks {gaps} are missing while block {num_blocks - 1} is present")

    proj_shape = _shape(sd, "patch_embed.proj.weight", path)
    inner_dim = proj_shape[0]
    heads = int(cfg["num_attention_heads"])
    if inner_dim % heads:
        raise ModelError(f"{path}: width {inner_dim} is not divisible by the base config's {heads} heads")
    config = {
        k: cfg[k] for k in (
            "flip_sin_to_cos", "freq_shift", "dropout", "attention_bias", "sample_width", "sample_height",
            "sample_frames", "patch_size_t", "temporal_compression_ratio", "max_text_seq_length", "activation_fn",
            "timestep_activation_fn", "norm_elementwise_affine", "norm_eps", "spatial_interpolation_scale",
            "temporal_interpolation_scale", "use_rotary_positional_embeddings", "use_learned_positional_embeddings",
        ) if k in cfg
    }
    config.update(
        num_attention_heads=heads,
        attention_head_dim=inner_dim // heads,
        text_embed_dim=_shape(sd, "patch_embed.text_proj.weight", path)[1],
        time_embed_dim=_shape(sd, "time_embedding.linear_2.weight", path)[0],
        ofs_embed_dim=sd["ofs_embedding.linear_2.weight"].shape[0] if "ofs_embedding.linear_2.weight" in sd
        else cfg.get("ofs_embed_dim"),
        num_layers=num_blocks,
        base_num_layers=max(int(cfg.get("num_layers", num_blocks)), num_blocks),
        patch_bias="patch_embed.proj.bias" in sd,
        trajectory_palette=RELEASE_PALETTE,
        source=f"MagicMotion release {release_name(path)}",
    )
    if len(proj_shape) == 4:  # Conv2d: CogVideoX 1.0
        config.update(in_channels=proj_shape[1], patch_size=proj_shape[2])
    else:  # Linear over (C * p_t * p * p): CogVideoX 1.5
        p, p_t = int(cfg["patch_size"]), int(cfg.get("patch_size_t") or 1)
        config.update(in_channels=proj_shape[1] // (p * p * p_t), patch_size=p)
    if "patch_embed.pos_embedding" in sd:
        config["use_learned_positional_embeddings"] = True

    controlnet = cast_like(CogVideoXTrajectoryControlNet(**config), "cpu", _checkpoint_dtype(sd))

    # out_projectors: the release's 1x1 convs (D, D, 1, 1) -> Linear (D, D)
    mapped = {}
    for key, value in sd.items():
        if key.startswith("out_projectors.") and key.endswith(".weight") and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        mapped[key] = value
    own = controlnet.state_dict()
    for key, value in mapped.items():
        if key in own and own[key].shape != value.shape:
            raise ModelError(
                f"{path}: {key} has shape {tuple(value.shape)}, the ControlNet expects {tuple(own[key].shape)}"
            )
    result = controlnet.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in mapped.items()},
                                        strict=False)
    report = ConversionReport(
        source=str(source), num_control_blocks=num_blocks, inner_dim=inner_dim,
        missing=sorted(result.missing_keys), unexpected=sorted(result.unexpected_keys),
    )
    return controlnet.eval(), report


def head_from_state_dict(sd: dict, source: str = "?", upsample: int = 2):
    """Build a `SegmentHead` for a released-layout head state dict and load it. Returns (head, missing, unexpected)."""
    from .segment_head import SegmentHead

    path = Path(source)
    blocks = {int(m.group(1)) for k in sd if (m := _HEAD_KEY.match(k))}
    if not blocks:
        raise ModelError(f"{path}: no convs.N keys; is this a MagicMotion segment head checkpoint?")
    w = _shape(sd, "convs.0.0.weight", path)
    out = _shape(sd, "conv_out.weight", path)
    mid = w[0]
    head = SegmentHead(hidden_size=w[1], num_blocks=max(blocks) + 1, mid_channels=mid, out_channels=out[0],
                       num_groups=min(16, mid), upsample=upsample)
    head = cast_like(head, "cpu", _checkpoint_dtype(sd))
    own = head.state_dict()
    for key, value in sd.items():
        if key in own and own[key].shape != value.shape:
            raise ModelError(f"{path}: {key} has shape {tuple(value.shape)}, the head expects {tuple(own[key].shape)}")
    result = head.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}, strict=False)
    return head.eval(), sorted(result.missing_keys), sorted(result.unexpected_keys)


def load_official_checkpoint(
    ckpt_path: str | os.PathLike,
    head_path: str | os.PathLike | None = None,
    base_config: dict | str | os.PathLike | None = None,
):
    """Load a released ControlNet `.pt` (and optionally its perception head `.pt`).

    Args:
        ckpt_path: e.g. `stage2/box.pt`.
        head_path: e.g. `stage2/box_perception_head.pt`.
        base_config: the base transformer's config (dict, config.json, or its folder) for values the
            tensors do not give (number of heads, sample size...); default CogVideoX-5B-I2V.
    Returns:
        (CogVideoXTrajectoryControlNet, SegmentHead or None, ConversionReport).
    """
    from ..limits import check_finite_weights

    sd = check_finite_weights(read_state_dict(ckpt_path), ckpt_path, ModelError)
    controlnet, report = controlnet_from_state_dict(sd, base_config, source=str(ckpt_path))
    head = None
    if head_path is not None:
        upsample = controlnet.config.patch_size
        head, missing, unexpected = head_from_state_dict(
            check_finite_weights(read_state_dict(head_path), head_path, ModelError), str(head_path), upsample)
        if head.config.hidden_size != report.inner_dim:
            raise ModelError(
                f"{head_path}: head width {head.config.hidden_size} does not match the ControlNet's {report.inner_dim}"
            )
        report.head_source = str(head_path)
        report.head_num_blocks = head.config.num_blocks
        report.head_missing, report.head_unexpected = missing, unexpected
    return controlnet, head, report


def convert_official_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    head_path: str | os.PathLike | None = None,
    base_config: dict | str | os.PathLike | None = None,
) -> ConversionReport:
    """Convert released `.pt` files to `out_dir/controlnet` (and `out_dir/segment_head`), safetensors,
    with the release's settings in `out_dir/magicmotion.json`.

    Each folder is written to a temporary folder beside it and renamed into place.
    """
    from ..io import atomic_path

    controlnet, head, report = load_official_checkpoint(ckpt_path, head_path, base_config)
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        raise ModelError(f"{out_dir}: parent folder {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    with atomic_path(out_dir / "controlnet", directory=True) as tmp:
        controlnet.save_pretrained(tmp, safe_serialization=True)
    if head is not None:
        with atomic_path(out_dir / "segment_head", directory=True) as tmp:
            head.save_pretrained(tmp, safe_serialization=True)
    with atomic_path(out_dir / SETTINGS_FILE) as tmp:
        _write_settings(tmp, report.source)
    return report


# ------------------------------------------------------------------------------ the release folder

# kind -> (stage folder, ControlNet file, perception head file or None), as the release names them
RELEASE_LAYOUT: dict[str, tuple[str, str, str | None]] = {
    "mask": ("stage1", "mask.pt", None),
    "box": ("stage2", "box.pt", "box_perception_head.pt"),
    "sparse_box": ("stage3", "sparse_box.pt", "sparse_box_perception_head.pt"),
}
RELEASE_PALETTE = "release"
SETTINGS_FILE = "magicmotion.json"  # the recommended settings a model folder carries


def release_settings() -> dict[str, Any]:
    """The settings the authors' release generates with (`magicmotion/inference.py` and its scripts):
    720x480, 49 frames, 50 steps, guidance 6, written at 8 fps; maps drawn in the release's colours and
    encoded by sampling the VAE posterior; first frame and maps each stretched to the output size (PIL
    Lanczos); CogVideoX's DPM sampler; VAE tiling on. A new dict on each call."""
    return {"size": [720, 480], "num_frames": 49, "num_inference_steps": 50, "guidance_scale": 6.0, "fps": 8,
            "trajectory_palette": RELEASE_PALETTE, "map_encoding": "sample", "resize": "stretch",
            "scheduler": "CogVideoXDPMScheduler", "vae_tiling": True}


def release_name(path: str | os.PathLike) -> str:
    """`stage2/box.pt` for `.../ckpts/stage2/box.pt` (the file's stage folder kept), else the file name."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if re.fullmatch(r"stage\d+", path.parent.name) else path.name


def _write_settings(path: Path, source: str) -> None:
    note = f"the authors' recommended settings, written by `magicmotion convert official` for {release_name(source)}"
    path.write_text(json.dumps({"_note": note, **release_settings()}, indent=2) + "\n")


def release_root(folder: str | os.PathLike) -> Path | None:
    """The folder holding `stageN/` of a downloaded release: `folder` itself, or `folder/ckpts` (the
    release's repository root); None when neither has a stage folder."""
    folder = Path(folder)
    for root in (folder, folder / "ckpts"):
        if any((root / stage).is_dir() for stage, _, _ in RELEASE_LAYOUT.values()):
            return root
    return None


def release_files(folder: str | os.PathLike) -> dict[str, tuple[Path, Path | None]]:
    """kind -> (ControlNet file, head file or None) of a release folder; ModelError naming every
    missing file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: release folder not found")
    root = release_root(folder) or folder
    files, missing = {}, []
    for kind, (stage, ckpt, head) in RELEASE_LAYOUT.items():
        paths = (root / stage / ckpt, root / stage / head if head else None)
        missing += [str(p) for p in paths if p is not None and not p.is_file()]
        files[kind] = paths
    if missing:
        expected = ", ".join(f"{s}/{c}" + (f" + {s}/{h}" if h else "") for s, c, h in RELEASE_LAYOUT.values())
        raise ModelError(
            f"{folder}: not a complete MagicMotion release: missing {', '.join(missing)} (a release folder "
            f"holds {expected}; convert a single checkpoint with `magicmotion convert official FILE.pt`)"
        )
    return files


def _previous_conversion(out: Path) -> bool:
    """`out` holds only what `convert_official_release` writes (so replacing it loses nothing else)."""
    stages = {stage for stage, _, _ in RELEASE_LAYOUT.values()}
    for entry in out.iterdir():
        if entry.name not in stages or not entry.is_dir():
            return False
        if any(e.name not in ("controlnet", "segment_head", SETTINGS_FILE) for e in entry.iterdir()):
            return False
    return True


def convert_official_release(
    release_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    base_config: dict | str | os.PathLike | None = None,
    progress=None,
) -> dict[str, ConversionReport]:
    """Convert a downloaded release folder (`ckpts/`, or the repository root holding it) in one go.

    Writes `out_dir/stage1/controlnet`, `out_dir/stage2/{controlnet,segment_head}`,
    `out_dir/stage3/{controlnet,segment_head}` (safetensors folders; the ControlNet configs say
    `trajectory_palette="release"` and their source) and `out_dir/stageN/magicmotion.json`
    (`release_settings()`). Everything is written to a temporary folder beside `out_dir` and renamed
    into place at the end, so a missing or corrupt file leaves no partial output. An existing
    `out_dir` is replaced only when empty or a previous conversion.

    Args:
        release_dir: the release folder.
        out_dir: the output folder (its parent must exist).
        base_config: as `load_official_checkpoint`.
        progress: called with one line of text before and after each stage (e.g. `print`).
    Returns:
        kind -> ConversionReport.
    Raises:
        ModelError naming the missing, unreadable or mismatched file.
    """
    from ..io import atomic_path

    files = release_files(release_dir)
    out = Path(out_dir)
    root = Path(release_dir).resolve()
    if out.exists():
        if not out.is_dir():
            raise ModelError(f"{out}: is a file, expected an output folder")
        if out.resolve() == root or out.resolve() in root.parents:
            raise ModelError(f"{out}: the output folder may not be the release folder or hold it")
        if not _previous_conversion(out):
            raise ModelError(f"{out}: holds other files; give a new or empty output folder")
    if not out.parent.is_dir():
        raise ModelError(f"{out}: parent folder {out.parent} does not exist")
    say = progress or (lambda line: None)
    reports = {}
    with atomic_path(out, directory=True) as tmp:
        for i, (kind, (ckpt, head)) in enumerate(files.items(), 1):
            stage = RELEASE_LAYOUT[kind][0]
            say(f"[{i}/{len(files)}] {stage} ({kind}): reading {ckpt}" + (f" and {head}" if head else ""))
            (tmp / stage).mkdir()
            report = convert_official_checkpoint(ckpt, tmp / stage, head_path=head, base_config=base_config)
            reports[kind] = report
            say(f"[{i}/{len(files)}] {stage}: {report.num_control_blocks} control blocks of width "
                f"{report.inner_dim}" + (f", segment head over {report.head_num_blocks} blocks" if head else "")
                + f" -> {out / stage}")
    return reports


def resolve_controlnet_for_kind(path: str | os.PathLike, kind: str) -> Path:
    """The ControlNet checkpoint or folder to use for trajectory `kind` (mask -> stage 1, box -> stage 2,
    sparse_box -> stage 3) under `path`:

    - a converted release (`stageN/controlnet/`) -> `path/stageN/controlnet`;
    - a downloaded release (`stageN/<kind>.pt`, or a repository root holding `ckpts/`) -> the `.pt`;
    - a stage folder (`controlnet/` or the kind's `.pt` inside) -> that;
    - a ControlNet folder (`config.json`) or a single checkpoint file -> `path` itself, whatever `kind`.

    Raises ModelError when `path` does not exist, or is a release whose stage for `kind` is missing.
    """
    if kind not in RELEASE_LAYOUT:
        raise ModelError(f"unknown kind {kind!r}: expected one of {', '.join(RELEASE_LAYOUT)}")
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelError(f"{path}: ControlNet not found")
    if (path / "config.json").is_file():
        return path
    if (path / "controlnet" / "config.json").is_file():
        return path / "controlnet"
    stage, ckpt, _ = RELEASE_LAYOUT[kind]
    if (path / ckpt).is_file():  # a release's stage folder
        return path / ckpt
    root = release_root(path)
    if root is None:
        raise ModelError(
            f"{path}: not a ControlNet folder (config.json), a converted release (stageN/controlnet) or a "
            "release folder (stageN/*.pt)"
        )
    for candidate in (root / stage / "controlnet", root / stage / ckpt):
        if (candidate / "config.json").is_file() or candidate.is_file():
            return candidate
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and re.fullmatch(r"stage\d+", p.name))
    raise ModelError(
        f"{root}: no {stage} ControlNet for {kind} trajectories (expected {root / stage / 'controlnet'} or "
        f"{root / stage / ckpt}); found {', '.join(found) or 'no stage folders'}"
    )
