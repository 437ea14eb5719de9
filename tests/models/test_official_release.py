"""Converting a whole release folder (`ckpts/stageN/*.pt`) and finding the ControlNet for a kind."""

from __future__ import annotations

import json

import pytest
import torch
from models_helpers import build_base, build_inputs, perturb
from test_official_convert import released_layout

from magicmotion.cli import main
from magicmotion.errors import ModelError
from magicmotion.models import CogVideoXTrajectoryControlNet, MagicMotionTransformer, SegmentHead
from magicmotion.models.convert import (
    RELEASE_LAYOUT,
    convert_official_release,
    load_official_checkpoint,
    release_settings,
    resolve_controlnet_for_kind,
)

KINDS = ("mask", "box", "sparse_box")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny release as the authors lay it out: ckpts/stage1/mask.pt, stage2/box.pt +
    box_perception_head.pt, stage3/sparse_box.pt + sparse_box_perception_head.pt ({"state_dict": ...},
    projectors as 1x1 convs, zero projectors for the untrained blocks); the base's config beside it."""
    root = tmp_path_factory.mktemp("release")
    base = build_base("cogvideox", num_layers=4, use_learned_positional_embeddings=True)
    base.save_config(root / "base")
    ckpts = root / "ckpts"
    for seed, (kind, (stage, ckpt, head)) in enumerate(RELEASE_LAYOUT.items()):
        (ckpts / stage).mkdir(parents=True)
        cn = perturb(CogVideoXTrajectoryControlNet.from_transformer(base, num_layers=2), seed=10 + seed)
        torch.save({"state_dict": released_layout(cn, extra_zero_projectors=2)}, ckpts / stage / ckpt)
        if head:
            torch.save({"state_dict": perturb(SegmentHead.from_transformer(base), seed=20 + seed).state_dict()},
                       ckpts / stage / head)
    return base, root


def _copy_release(release_root, tmp_path):
    import shutil

    shutil.copytree(release_root / "ckpts", tmp_path / "ckpts")
    return tmp_path / "ckpts"


def _outputs(base, cn, head=None):
    inputs, trajectory = build_inputs(base, batch=2)
    with torch.no_grad():
        out = MagicMotionTransformer(base, cn, head)(trajectory_latents=trajectory,
                                                     return_segmentation=head is not None, **inputs)
    return out.sample, out.segmentation


def test_cli_converts_a_release_folder_like_each_file_on_its_own(release, tmp_path, capsys):
    base, root = release
    out = tmp_path / "converted"
    code = main(["convert", "official", str(root / "ckpts"), "--out", str(out), "--base", str(root / "base")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[1/3] stage1 (mask)" in printed and "[3/3] stage3" in printed
    assert "sparse_box_perception_head.pt" in printed
    assert sorted(p.name for p in out.iterdir()) == ["stage1", "stage2", "stage3"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert sorted(p.name for p in (out / "stage1").iterdir()) == ["controlnet", "magicmotion.json"]
    for kind, (stage, ckpt, head) in RELEASE_LAYOUT.items():
        settings = json.loads((out / stage / "magicmotion.json").read_text())
        assert {k: v for k, v in settings.items() if not k.startswith("_")} == release_settings()
        cn = CogVideoXTrajectoryControlNet.from_pretrained(out / stage / "controlnet")
        assert cn.config.trajectory_palette == "release"
        assert cn.config.source == f"MagicMotion release {stage}/{ckpt}"
        head_model = SegmentHead.from_pretrained(out / stage / "segment_head") if head else None
        assert (out / stage / "segment_head").is_dir() == bool(head)
        cn1, head1, _ = load_official_checkpoint(root / "ckpts" / stage / ckpt,
                                                 root / "ckpts" / stage / head if head else None,
                                                 base_config=root / "base")
        a, b = _outputs(base, cn, head_model), _outputs(base, cn1, head1)
        assert torch.equal(a[0], b[0])
        assert (a[1] is None and b[1] is None) or torch.equal(a[1], b[1])


def test_release_settings_are_a_fresh_dict():
    s = release_settings()
    assert s == {"size": [720, 480], "num_frames": 49, "num_inference_steps": 50, "guidance_scale": 6.0,
                 "fps": 8, "trajectory_palette": "release", "map_encoding": "sample", "resize": "stretch",
                 "scheduler": "CogVideoXDPMScheduler", "vae_tiling": True}
    s["size"][0] = 1
    assert release_settings()["size"] == [720, 480]


def test_repository_root_and_progress_and_replacing_a_previous_conversion(release, tmp_path):
    base, root = release
    lines = []
    out = tmp_path / "converted"
    reports = convert_official_release(root, out, base_config=root / "base", progress=lines.append)  # root holds ckpts/
    assert list(reports) == list(KINDS)
    assert reports["box"].head_num_blocks == 4 and reports["mask"].head_source is None
    assert len(lines) == 6 and lines[0].startswith("[1/3] stage1 (mask): reading")
    (out / "stage2" / "controlnet" / "config.json").write_text("{}")  # spoil it: a rerun replaces it whole
    convert_official_release(root / "ckpts", out, base_config=root / "base")
    assert CogVideoXTrajectoryControlNet.from_pretrained(out / "stage2" / "controlnet").config.num_layers == 2


@pytest.mark.parametrize("missing", ["stage1/mask.pt", "stage3/sparse_box_perception_head.pt"])
def test_a_missing_file_is_exit_2_naming_it(release, tmp_path, capsys, missing):
    _, root = release
    ckpts = _copy_release(root, tmp_path)
    (ckpts / missing).unlink()
    out = tmp_path / "converted"
    code = main(["convert", "official", str(ckpts), "--out", str(out), "--base", str(root / "base")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("magicmotion: error: ") and err.count("\n") == 1
    assert missing in err and "not a complete MagicMotion release" in err
    assert not out.exists()


def test_a_corrupt_file_is_exit_2_naming_it_and_leaves_nothing(release, tmp_path, capsys):
    _, root = release
    ckpts = _copy_release(root, tmp_path)
    (ckpts / "stage3" / "sparse_box.pt").write_bytes(b"truncated download")
    out = tmp_path / "converted"
    code = main(["convert", "official", str(ckpts), "--out", str(out), "--base", str(root / "base")])
    err = capsys.readouterr().err
    assert code == 2 and "stage3/sparse_box.pt" in err and err.count("\n") == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # stages 1-2 were not left behind


def test_the_output_may_not_replace_other_files_or_the_release(release, tmp_path):
    _, root = release
    ckpts = _copy_release(root, tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="holds other files"):
        convert_official_release(ckpts, tmp_path / "mine", base_config=root / "base")
    with pytest.raises(ModelError, match="may not be the release folder"):
        convert_official_release(ckpts, ckpts, base_config=root / "base")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (ckpts / "stage1" / "mask.pt").is_file()


def test_head_with_a_release_folder_is_an_error(release, tmp_path, capsys):
    _, root = release
    code = main(["convert", "official", str(root / "ckpts"), "--out", str(tmp_path / "o"), "--head", "x.pt"])
    assert code == 2 and "--head goes with a single .pt" in capsys.readouterr().err


def test_single_file_conversion_records_the_release_too(release, tmp_path):
    _, root = release
    out = tmp_path / "weights"
    main(["convert", "official", str(root / "ckpts" / "stage2" / "box.pt"), "--out", str(out),
          "--base-config", str(root / "base")])
    cfg = json.loads((out / "controlnet" / "config.json").read_text())
    assert cfg["trajectory_palette"] == "release" and cfg["source"] == "MagicMotion release stage2/box.pt"
    settings = json.loads((out / "magicmotion.json").read_text())
    assert settings["map_encoding"] == "sample" and "stage2/box.pt" in settings["_note"]


# ----------------------------------------------------------------------------- resolving a kind


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    _, root = release
    out = tmp_path_factory.mktemp("conv") / "converted"
    convert_official_release(root / "ckpts", out, base_config=root / "base")
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_resolve_in_a_release_folder(release, kind):
    _, root = release
    stage, ckpt, _ = RELEASE_LAYOUT[kind]
    assert resolve_controlnet_for_kind(root / "ckpts", kind) == root / "ckpts" / stage / ckpt
    assert resolve_controlnet_for_kind(root, kind) == root / "ckpts" / stage / ckpt  # the repository root
    assert resolve_controlnet_for_kind(root / "ckpts" / stage, kind) == root / "ckpts" / stage / ckpt


@pytest.mark.parametrize("kind", KINDS)
def test_resolve_in_a_converted_folder(converted, kind):
    stage = RELEASE_LAYOUT[kind][0]
    assert resolve_controlnet_for_kind(converted, kind) == converted / stage / "controlnet"
    assert resolve_controlnet_for_kind(str(converted / stage), kind) == converted / stage / "controlnet"


def test_resolve_a_single_file_or_folder_is_itself(release, converted):
    _, root = release
    mask_pt, stage3 = root / "ckpts" / "stage1" / "mask.pt", converted / "stage3" / "controlnet"
    assert resolve_controlnet_for_kind(mask_pt, "box") == mask_pt
    assert resolve_controlnet_for_kind(stage3, "mask") == stage3


def test_resolve_names_the_missing_stage(release, tmp_path, converted):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(converted, partial)
    shutil.rmtree(partial / "stage3")
    with pytest.raises(ModelError, match=r"no stage3 ControlNet for sparse_box trajectories.*found stage1, stage2"):
        resolve_controlnet_for_kind(partial, "sparse_box")
    with pytest.raises(ModelError, match="ControlNet not found"):
        resolve_controlnet_for_kind(tmp_path / "nowhere", "box")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a ControlNet folder"):
        resolve_controlnet_for_kind(tmp_path / "empty", "box")
    with pytest.raises(ModelError, match="unknown kind 'boxes'"):
        resolve_controlnet_for_kind(converted, "boxes")


# ----------------------------------------------------------------------------- the config fields


def test_trajectory_palette_and_source_survive_save_and_load(tmp_path):
    base = build_base("cogvideox", num_layers=2)
    cn = CogVideoXTrajectoryControlNet.from_transformer(base)
    assert cn.config.trajectory_palette == "voc" and cn.config.source is None
    cn = CogVideoXTrajectoryControlNet(**{**dict(cn.config), "trajectory_palette": "release", "source": "x"})
    cn.save_pretrained(tmp_path / "cn")
    back = CogVideoXTrajectoryControlNet.from_pretrained(tmp_path / "cn")
    assert back.config.trajectory_palette == "release" and back.config.source == "x"
    with pytest.raises(ModelError, match="trajectory_palette must be one of voc, release"):
        CogVideoXTrajectoryControlNet(**{**dict(cn.config), "trajectory_palette": "rainbow"})


def test_generation_reads_the_converted_settings(converted):
    from magicmotion.pipelines.settings import resolve_settings

    cn = resolve_controlnet_for_kind(converted, "box")
    config = json.loads((cn / "config.json").read_text())
    s = resolve_settings("cogvideox", controlnet=cn, controlnet_config=config)
    assert {k: s[k] for k in release_settings()} == release_settings()
    assert s.sources["map_encoding"] == str(converted / "stage2" / "magicmotion.json")
