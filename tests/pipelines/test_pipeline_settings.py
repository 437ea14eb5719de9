"""Recommended settings travel with the model (`magicmotion.json`), whichever way it is named; sizes a
model cannot run are refused before it loads; release-style inputs (image and maps a few pixels apart,
release colours, 49-frame 720x480 maps) generate with the default model and no size flag."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from PIL import Image
from pipelines_helpers import make_image, make_trajectory

from magicmotion.cli import main
from magicmotion.errors import ModelError, PipelineError
from magicmotion.io import read_video, write_image, write_video
from magicmotion.pipelines import generate, load_pipeline
from magicmotion.pipelines.conditions import check_aspect, prepare_conditions
from magicmotion.pipelines.loading import TINY_MODEL_DIR, model_settings
from magicmotion.pipelines.pipeline_cogvideox import MagicMotionCogVideoXPipeline, cogvideox_trajectory_latents
from magicmotion.pipelines.pipeline_wan import MagicMotionWanPipeline
from magicmotion.pipelines.settings import (SETTINGS_FILE, default_size, model_limits, read_settings_file,
                                            resolve_settings, write_settings_file)
from magicmotion.trajectory import from_dict, render

TINY_BASE = TINY_MODEL_DIR / "base"
TINY_CN = TINY_MODEL_DIR / "stage2" / "controlnet"


def test_tiny_model_settings_whichever_way_it_is_named():
    shipped = read_settings_file(TINY_BASE)
    assert shipped["guidance_scale"] == 1.0 and shipped["fps"] == 8.0 and shipped["trajectory_palette"] == "voc"
    by_default = load_pipeline(base=None, kind="box").model_settings
    by_folder = load_pipeline(base=TINY_BASE, controlnet=TINY_CN).model_settings
    by_class = MagicMotionWanPipeline.from_pretrained(str(TINY_BASE), controlnet=TINY_CN).model_settings
    _, on_paper, _ = model_settings(None, None, "box")
    for s in (by_folder, by_class, on_paper):
        assert s.values == by_default.values
    assert by_default.sources["guidance_scale"] == str(TINY_BASE / SETTINGS_FILE)


def test_python_api_uses_the_models_guidance_and_steps():
    pipe = load_pipeline(base=None, kind="box")
    spec = make_trajectory(64, frames=9)
    image = make_image(64)
    torch.manual_seed(0)
    default, _ = generate(pipe, image, "a shape", spec, "box", seed=3)
    explicit, _ = generate(pipe, image, "a shape", spec, "box", seed=3, guidance_scale=1.0, num_inference_steps=25)
    paper, _ = generate(pipe, image, "a shape", spec, "box", seed=3, guidance_scale=6.0, num_inference_steps=25)
    assert np.array_equal(default, explicit)
    assert not np.array_equal(default, paper)


def test_order_of_sources_and_arguments(models_dir, tmp_path):
    base = tmp_path / "wan"
    shutil.copytree(models_dir / "wan", base)
    cn = tmp_path / "cn"
    shutil.copytree(models_dir / "wan_cn", cn)
    s = resolve_settings("wan", base=base, controlnet=cn)
    assert s["guidance_scale"] == 6.0 and s.sources["guidance_scale"] == "wan defaults" and s["fps"] == 16.0
    write_settings_file(base, {"guidance_scale": 4.0, "num_inference_steps": 30})
    write_settings_file(cn, {"guidance_scale": 3.0})
    s = resolve_settings("wan", base=base, controlnet=cn)
    assert (s["guidance_scale"], s["num_inference_steps"]) == (3.0, 30)
    assert s.sources["guidance_scale"] == str(cn / SETTINGS_FILE)
    assert s.sources["num_inference_steps"] == str(base / SETTINGS_FILE)
    given = s.with_arguments(guidance_scale=2.0, num_inference_steps=None)
    assert given["guidance_scale"] == 2.0 and given.sources["guidance_scale"] == "argument"
    assert given["num_inference_steps"] == 30
    # a pipeline loaded from those folders carries them, and the ControlNet's palette
    pipe = load_pipeline(base=base, controlnet=cn)
    assert pipe.model_settings["guidance_scale"] == 3.0
    assert pipe.model_settings["trajectory_palette"] == "voc"


@pytest.mark.parametrize("bad", [{"guidance_scale": float("nan")}, {"fps": 0}, {"num_frames": 10},
                                 {"trajectory_palette": "rainbow"}, {"colour": 1}, [1, 2]])
def test_bad_settings_file_is_named(tmp_path, bad):
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(bad))
    with pytest.raises(ModelError, match=str(tmp_path / SETTINGS_FILE)):
        read_settings_file(tmp_path)


def test_release_palette_in_the_controlnet_config_renders_specs_with_it(models_dir, tmp_path):
    from magicmotion.models import WanTrajectoryControlNet

    cn = WanTrajectoryControlNet.from_pretrained(models_dir / "wan_cn")
    cn.register_to_config(trajectory_palette="release")
    cn.save_pretrained(tmp_path / "cn")
    pipe = load_pipeline(base=models_dir / "wan", controlnet=tmp_path / "cn")
    assert pipe.model_settings["trajectory_palette"] == "release"
    assert pipe.model_settings.sources["trajectory_palette"] == "ControlNet config"
    spec = make_trajectory(32)
    cond, *_ = pipe.prepare_trajectory(make_image(32), spec, "box", height=32, width=32)
    assert np.array_equal(cond.maps, render(spec, "box", size=(32, 32), palette="release"))
    assert not np.array_equal(cond.maps, render(spec, "box", size=(32, 32), palette="voc"))


def test_limits_from_the_configs():
    tcfg = json.loads((TINY_BASE / "transformer" / "config.json").read_text())
    vcfg = json.loads((TINY_BASE / "vae" / "config.json").read_text())
    limits = model_limits("wan", tcfg, vcfg)
    assert limits.multiple == 8 and limits.max_width == 512 and limits.max_height == 512
    limits.check(512, 64, 17)
    with pytest.raises(PipelineError, match="at most 512 pixels wide"):
        limits.check(720, 480, 49)
    # the real Wan2.1 rotary table (1024) is no limit at 480P/720P
    model_limits("wan", {"patch_size": [1, 2, 2], "rope_max_seq_len": 1024}, None).check(1280, 720, 81)
    fixed = model_limits("cogvideox", {"patch_size": 2, "use_learned_positional_embeddings": True,
                                       "sample_width": 90, "sample_height": 60, "sample_frames": 49},
                         {"block_out_channels": [1, 2, 3, 4]})
    fixed.check(720, 480, 49)
    with pytest.raises(PipelineError, match="only works at 720x480 with 49 frames"):
        fixed.check(720, 480, 17)


def test_default_size_from_the_models_area():
    _, s, limits = model_settings(None, None, "box")
    assert default_size(s, limits.multiple, (720, 480)) == (72, 48)  # ~64x64 pixels, the aspect kept
    assert default_size(s, limits.multiple, (32, 32)) == (32, 32)  # never scaled up
    assert default_size(s.with_arguments(size=[96, 64]), limits.multiple, (720, 480)) == (96, 64)


def test_aspect_a_few_percent_apart_is_fitted_each_on_its_own():
    assert check_aspect((720, 480), (720, 480), "x") is None
    for image, maps in (((1280, 853), (1280, 864)), ((848, 480), (864, 480)), ((1280, 788), (1280, 800))):
        assert "stretched" in check_aspect(image, maps, "x")
    with pytest.raises(PipelineError, match="differ by 5.0%"):
        check_aspect((720, 480), (720, 456), "x")
    # maps 1 row taller, stretched to the image's frame: a box at the bottom edge stays at the bottom
    image = np.zeros((106, 160, 3), np.uint8)
    maps = np.zeros((9, 108, 160, 3), np.uint8)
    maps[:, 98:108, 40:80] = 200
    cond = prepare_conditions(image, maps, "box", (96, 64))
    rows = np.nonzero(cond.maps[0].any(axis=(1, 2)))[0]
    assert rows.max() == 63 and cond.fit is not None


def test_sampled_map_encoding_follows_the_generator():
    from magicmotion.pipelines.tiny import tiny_cogvideox_components

    vae = tiny_cogvideox_components(seed=0)["vae"]
    maps = np.zeros((9, 32, 32, 3), np.uint8)
    maps[:, 8:20, 8:20] = (128, 32, 32)
    mode = cogvideox_trajectory_latents(vae, maps)
    assert torch.equal(mode, cogvideox_trajectory_latents(vae, maps))
    a = cogvideox_trajectory_latents(vae, maps, torch.Generator().manual_seed(1), sample=True)
    b = cogvideox_trajectory_latents(vae, maps, torch.Generator().manual_seed(1), sample=True)
    c = cogvideox_trajectory_latents(vae, maps, torch.Generator().manual_seed(2), sample=True)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, mode)


def test_release_settings_in_a_cogvideox_folder_sample_the_maps(models_dir, tmp_path):
    cn = tmp_path / "cn"
    shutil.copytree(models_dir / "cog_cn_trained", cn)
    write_settings_file(cn, {"map_encoding": "sample", "trajectory_palette": "release"})
    pipe = MagicMotionCogVideoXPipeline.from_pretrained(models_dir / "cog", controlnet=cn)
    assert pipe.model_settings["map_encoding"] == "sample"
    calls = []
    original = pipe.encode_trajectory

    def spy(maps, device, dtype, generator=None):
        calls.append(generator)
        return original(maps, device, dtype, generator)

    pipe.encode_trajectory = spy
    pipe(make_image(32), "a shape", make_trajectory(32), num_inference_steps=1,
         generator=torch.Generator().manual_seed(0), output_type="latent")
    assert calls and calls[0] is not None


# ---------------------------------------------------------------------------------------- the CLI


def release_like_inputs(folder, image_wh, maps_wh, frames=49):
    """A first frame and a box map video drawn in the release palette, a few pixels apart in size."""
    mw, mh = maps_wh
    objects = []
    for i, (x, y) in enumerate([(0.1, 0.3), (0.5, 0.5)]):
        boxes = {str(t): [(x + 0.005 * t) * mw, y * mh, (x + 0.005 * t + 0.2) * mw, (y + 0.25) * mh]
                 for t in range(frames)}
        objects.append({"id": i + 1, "name": f"object {i + 1}", "boxes": boxes})
    spec = from_dict({"version": 1, "width": mw, "height": mh, "num_frames": frames, "objects": objects})
    write_video(folder / "maps.mp4", render(spec, "box", palette="release"), fps=8)
    write_image(folder / "first.png", np.asarray(Image.fromarray(make_image(64)).resize(image_wh)))
    return folder / "first.png", folder / "maps.mp4"


@pytest.mark.slow
def test_release_style_inputs_generate_with_the_default_model_and_no_size(tmp_path, capsys):
    # 720x480 with 49 frames, and a pair a few pixels apart (the release's 848x480 image, 864x480 maps;
    # half that size was used before, but its 2 px outlines are outside the lossy-video envelope and refused)
    for name, image_wh, maps_wh in (("a", (720, 480), (720, 480)), ("b", (848, 480), (864, 480))):
        folder = tmp_path / name
        folder.mkdir()
        image, maps = release_like_inputs(folder, image_wh, maps_wh)
        out = folder / "video.mp4"
        assert main(["generate", "--image", str(image), "--trajectory", str(maps), "--prompt", "two shapes",
                     "--out", str(out), "--seed", "0", "--steps", "2"]) == 0, capsys.readouterr().err
        frames, fps = read_video(out)
        record = json.loads(out.with_suffix(".json").read_text())
        w, h = record["width"], record["height"]
        # sizes on an 8-px grid: one step at h = 40 moves w/h by 0.2 (measured 0.033 and 0)
        assert frames.shape[0] == 49 and w * h <= 4096 and abs(w / h - image_wh[0] / image_wh[1]) < 0.25
        assert fps == 8 and record["guidance"] == 1.0 and record["steps"] == 2 and record["kind"] == "box"
        assert record["model_settings"]["sources"]["num_inference_steps"] == "argument"
        assert record["model_settings"]["sources"]["guidance_scale"].endswith(SETTINGS_FILE)
        assert "release palette" in record["redrawn"]
        assert (record["fit"] is None) == (name == "a")


def test_a_size_the_model_cannot_run_is_refused_up_front(tmp_path, capsys):
    image, maps = release_like_inputs(tmp_path, (720, 480), (720, 480), frames=9)
    code = main(["generate", "--image", str(image), "--trajectory", str(maps), "--prompt", "x",
                 "--out", str(tmp_path / "v.mp4"), "--size", "720x480"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "at most 512 pixels wide" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "maps.mp4"]


def test_outputs_never_replace_an_input(tmp_path, capsys):
    Image.fromarray(make_image(32)).save(tmp_path / "first.png")
    from magicmotion.trajectory import save

    save(make_trajectory(32), tmp_path / "spec.json")
    before = (tmp_path / "spec.json").read_bytes()
    code = main(["generate", "--image", str(tmp_path / "first.png"), "--trajectory", str(tmp_path / "spec.json"),
                 "--prompt", "x", "--out", str(tmp_path / "spec.mp4")])
    assert code == 2 and "would overwrite an input" in capsys.readouterr().err
    assert (tmp_path / "spec.json").read_bytes() == before


# ---------------------------------------------------------------------------------------- the release


def fake_release(models_dir, root):
    """ckpts/stage{1,2,3}/*.pt as the authors ship them (1x1-conv projectors), for the tiny CogVideoX base."""
    from magicmotion.models import CogVideoXTrajectoryControlNet
    from magicmotion.models.convert import RELEASE_LAYOUT
    from magicmotion.pipelines.tiny import tiny_cogvideox_components

    transformer = tiny_cogvideox_components(seed=0)["transformer"]
    for seed, (stage, ckpt, head) in enumerate(RELEASE_LAYOUT.values()):
        torch.manual_seed(seed)
        cn = CogVideoXTrajectoryControlNet.from_transformer(transformer)
        sd = {k: (v.reshape(*v.shape, 1, 1) if k.startswith("out_projectors.") and k.endswith(".weight") else v)
              for k, v in cn.state_dict().items()}
        (root / "ckpts" / stage).mkdir(parents=True)
        torch.save({"state_dict": sd}, root / "ckpts" / stage / ckpt)
        if head:
            from magicmotion.models import SegmentHead

            torch.save({"state_dict": SegmentHead.from_transformer(transformer).state_dict()},
                       root / "ckpts" / stage / head)
    return root / "ckpts"


def test_the_release_folder_and_its_conversion_bring_the_releases_settings(models_dir, tmp_path):
    from diffusers import CogVideoXDPMScheduler

    from magicmotion.models.convert import convert_official_release

    ckpts = fake_release(models_dir, tmp_path)
    converted = tmp_path / "converted"
    convert_official_release(ckpts, converted, base_config=models_dir / "cog" / "transformer")
    for controlnet, kind, stage in ((ckpts, "sparse_box", "stage3"), (converted, "mask", "stage1"),
                                    (ckpts / "stage2" / "box.pt", "box", "stage2")):
        pipe = load_pipeline(base=models_dir / "cog", controlnet=controlnet, kind=kind)
        s = pipe.model_settings
        assert (s["trajectory_palette"], s["map_encoding"], s["resize"], s["fps"]) == ("release", "sample",
                                                                                      "stretch", 8)
        assert isinstance(pipe.scheduler, CogVideoXDPMScheduler) and pipe.vae.use_tiling
        assert stage in pipe.controlnet.config.source or controlnet == converted
    # the release stretches image and maps to the output size, each on its own
    cond, *_ = pipe.prepare_trajectory(np.zeros((39, 40, 3), np.uint8), make_trajectory(32), "box",
                                       height=32, width=32)
    assert cond.image.shape == (32, 32, 3) and cond.fit is not None and "stretched" in cond.fit


def test_settings_of_a_released_pt_are_known_before_it_loads(models_dir, tmp_path):
    ckpts = fake_release(models_dir, tmp_path)
    for controlnet in (ckpts, ckpts / "stage2" / "box.pt"):
        _, s, _ = model_settings(models_dir / "cog", controlnet, "box")
        assert (s["trajectory_palette"], s["map_encoding"], s["resize"]) == ("release", "sample", "stretch")
        # values and where each comes from, as the loaded pipeline will say
        assert s.record() == load_pipeline(models_dir / "cog", controlnet, kind="box").model_settings.record()
        assert s.sources["trajectory_palette"] == "ControlNet config"
    pipe = MagicMotionCogVideoXPipeline.from_pretrained(models_dir / "cog", controlnet=ckpts / "stage1" / "mask.pt")
    assert type(pipe.scheduler).__name__ == "CogVideoXDPMScheduler" and pipe.vae.use_tiling


# ------------------------------------------------------------------ issue 38: the default size, --fit

REAL = __import__("pathlib").Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"


def test_default_size_keeps_a_photos_aspect_ratio():
    """An 854x480 photo became 80x40 (11% of its height cut), a 640x480 one 72x48 (11% too); within the
    tiny model's 64x64 area they are now 72x40 (1.2%) and 64x48 (nothing)."""
    from magicmotion.pipelines.settings import describe_fit

    _, s, limits = model_settings(None, None, "box")
    assert default_size(s, limits.multiple, (854, 480)) == (72, 40)
    assert default_size(s, limits.multiple, (640, 480)) == (64, 48)
    assert default_size(s, limits.multiple, (480, 854)) == (40, 72)
    assert describe_fit((854, 480), (72, 40), "cover") == "the 854x480 image is generated at 72x40, 1.2% of the height cropped"
    assert describe_fit((640, 480), (64, 48), "cover") == "the 640x480 image is generated at 64x48, resized"
    assert describe_fit((854, 480), (64, 64), "pad") == \
        "the 854x480 image is generated at 64x64, black bars over 43.8% of the height"
    assert describe_fit((64, 64), (64, 64), "cover") is None


@settings(max_examples=60, deadline=None)
@given(w=st.integers(16, 4000), h=st.integers(16, 4000), multiple=st.sampled_from([8, 16, 32]),
       area=st.sampled_from([64 * 64, 832 * 480, 1280 * 704]))
def test_default_size_is_within_the_area_and_nearest_in_aspect(w, h, multiple, area):
    """Multiples of the model's, within its area and the input's own size (but at least one multiple a side),
    and either within 2% of the input's aspect or as near as any size within the area can be (the
    reference: every (W, H) at those multiples, searched exhaustively)."""
    from magicmotion.pipelines.settings import ASPECT_SLACK, ModelSettings

    W, H = default_size(ModelSettings({"area": area}), multiple, (w, h))
    assert W % multiple == 0 and H % multiple == 0
    limit = min(area, w * h)
    assert W * H <= limit or H == multiple or W == multiple
    error = abs(W / H - w / h) / (w / h)
    if error > ASPECT_SLACK and W * H <= limit:
        best = min(abs(x / y - w / h) / (w / h) for y in range(multiple, h + multiple, multiple)
                   for x in range(multiple, limit // y + 1, multiple) if x * y <= limit)
        assert error <= best + 1e-12


def test_fit_pad_centres_the_image_and_its_boxes_on_black():
    """--fit pad: the 854x480 real photo fitted inside 64x64 (64x36, area-averaged as OpenCV does), 14
    black rows above and below; a box is scaled and shifted with it (within a pixel: rounding)."""
    import cv2

    from magicmotion.trajectory import ObjectTrack, Trajectory

    frame = cv2.cvtColor(cv2.imread(str(REAL / "images" / "judo" / "00000.jpg")), cv2.COLOR_BGR2RGB)
    assert frame.shape == (480, 854, 3)
    traj = Trajectory(854, 480, 5, [ObjectTrack(1, "a", boxes={0: np.array([427, 240, 640, 480]),
                                                               4: np.array([0, 0, 213, 120])})])
    cond = prepare_conditions(frame, traj, "box", (64, 64), resize="pad")
    inner = cv2.resize(frame, (64, 36), interpolation=cv2.INTER_AREA)
    assert np.array_equal(cond.image[14:50], inner)
    assert not cond.image[:14].any() and not cond.image[50:].any()
    assert not cond.maps[:, :14].any() and not cond.maps[:, 50:].any()
    ys, xs = np.nonzero(cond.maps[0].any(-1))
    # box (427, 240)-(640, 480) x 64/854, + 14 rows: (32.0, 32.0)-(48.0, 50.0)
    assert abs(xs.min() - 32) <= 1 and abs(ys.min() - 32) <= 1 and abs(xs.max() + 1 - 48) <= 1 and ys.max() + 1 == 50


def test_generate_a_real_photo_with_no_flags_says_what_it_did(tmp_path, capsys):
    """The new user's first run: a real 854x480 photo, no size flags. One line says the tiny model knows
    only its synthetic world (and how to get a real base), one what was done to the picture; the video
    keeps the photo's aspect. --fit pad and --fit stretch are taken and recorded."""
    import cv2

    photo = cv2.cvtColor(cv2.imread(str(REAL / "images" / "judo" / "00000.jpg")), cv2.COLOR_BGR2RGB)
    write_image(tmp_path / "photo.png", photo)
    spec = {"version": 1, "width": 854, "height": 480, "num_frames": 5,
            "objects": [{"id": 1, "label": "a", "boxes": {"0": [300, 150, 500, 350], "4": [500, 150, 700, 350]}}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    base = ["generate", "--image", str(tmp_path / "photo.png"), "--trajectory", str(tmp_path / "spec.json"),
            "--prompt", "x", "--steps", "1", "--seed", "0"]
    assert main(base + ["--out", str(tmp_path / "v.mp4")]) == 0
    err = capsys.readouterr().err
    assert "shipped tiny model" in err and "synthetic" in err and "hf download quanhaol/MagicMotion" in err
    assert "size: the 854x480 image is generated at 72x40, 1.2% of the height cropped (--fit crop;" in err
    assert read_video(tmp_path / "v.mp4")[0].shape[1:3] == (40, 72)
    for fit, resize in (("pad", "pad"), ("stretch", "stretch")):
        out = tmp_path / f"{fit}.mp4"
        assert main(base + ["--fit", fit, "--out", str(out)]) == 0
        assert f"(--fit {fit};" in capsys.readouterr().err
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["model_settings"]["values"]["resize"] == resize
        assert record["model_settings"]["sources"]["resize"] == "argument"
    with pytest.raises(SystemExit) as refused:  # argparse's choices: one line, exit 2
        main(base + ["--fit", "squash", "--out", str(tmp_path / "bad.mp4")])
    assert refused.value.code == 2 and "invalid choice: 'squash'" in capsys.readouterr().err


def test_generate_doc_shows_each_fit():
    """docs/generate.md documents --fit with its picture (benchmarks/fit_picture.py): a row per fit."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "generate.md").read_text()
    assert "](fit.png)" in doc and "| `--fit crop\\|pad\\|stretch` |" in doc
    for fit in ("crop", "pad", "stretch"):
        assert f"- `{fit}` " in doc
    picture = np.asarray(Image.open(root / "docs" / "fit.png").convert("RGB"))
    from magicmotion.sheet import GAP, LABEL_HEIGHT, TILE

    assert picture.shape[0] == LABEL_HEIGHT + 3 * (TILE + GAP) + GAP  # three rows
    # pad: black bars above and below the photo in the first-frame column of the second row
    y = LABEL_HEIGHT + (TILE + GAP) + GAP
    from magicmotion.sheet import ROW_LABEL_WIDTH

    first = picture[y:y + TILE, ROW_LABEL_WIDTH + GAP:ROW_LABEL_WIDTH + GAP + TILE]
    assert not first[:30].any() and not first[-30:].any() and first[TILE // 2].any()


# ------------------------------------------------------- issue 34: settings before any weights load


@pytest.fixture
def tiny_copy(tmp_path, monkeypatch):
    """A copy of the shipped tiny model (12 MB) standing in for it, its stages told apart: stage1's
    ControlNet folder has its own magicmotion.json (guidance 2.5), stage3's config.json asks for the
    release palette (on the shipped model all three stages' settings are the same)."""
    from magicmotion.pipelines import loading

    tiny = tmp_path / "tiny"
    shutil.copytree(TINY_MODEL_DIR, tiny)
    monkeypatch.setattr(loading, "TINY_MODEL_DIR", tiny)
    write_settings_file(tiny / "stage1" / "controlnet", {"guidance_scale": 2.5})
    config = tiny / "stage3" / "controlnet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "trajectory_palette": "release"}))
    return tiny


def test_settings_before_loading_are_those_of_the_kinds_stage(tiny_copy):
    stage1 = str(tiny_copy / "stage1" / "controlnet" / SETTINGS_FILE)
    base = str(tiny_copy / "base" / SETTINGS_FILE)
    for kind, guidance, source, palette in (("mask", 2.5, stage1, "voc"), ("box", 1.0, base, "voc"),
                                            ("sparse_box", 1.0, base, "release"), (None, 1.0, base, "voc")):
        family, s, limits = model_settings(None, None, kind)
        assert (family, s["guidance_scale"], s.sources["guidance_scale"], s["trajectory_palette"]) == (
            "wan", guidance, source, palette), kind
        assert s.values == load_pipeline(kind=kind).model_settings.values  # what the load then recommends
        # the same stages from a folder laid out as a converted release (stageN/controlnet)
        assert model_settings(tiny_copy / "base", tiny_copy, kind)[1].record() == s.record()
    # the VAE's x4 and the transformer's 2x2 patches, 64 rotary positions a side, 4 frames a latent
    assert limits == model_limits("wan", {"patch_size": [1, 2, 2], "rope_max_seq_len": 64},
                                  {"scale_factor_spatial": 4}) and limits.multiple == 8 and limits.max_frames == 253


def test_a_controlnet_named_with_the_tiny_base_wins_over_the_kinds_stage(tiny_copy):
    stage1 = tiny_copy / "stage1" / "controlnet"
    _, s, _ = model_settings(None, stage1, "box")
    assert s["guidance_scale"] == 2.5 and s.sources["guidance_scale"] == str(stage1 / SETTINGS_FILE)
    loaded = load_pipeline(controlnet=stage1, kind="box")
    assert loaded.model_settings.values == s.values
    assert torch.equal(loaded.controlnet.out_projectors[0].weight,
                       load_pipeline(kind="mask").controlnet.out_projectors[0].weight)  # stage 1's weights
    _, s, _ = model_settings(None, tiny_copy / "stage2" / "controlnet", "mask")
    assert s["guidance_scale"] == 1.0


def test_a_saved_pipeline_folder_brings_its_controlnet_and_its_settings(tiny_copy):
    base = tiny_copy / "base"
    shutil.copytree(tiny_copy / "stage1" / "controlnet", base / "controlnet")
    _, s, _ = model_settings(base)
    assert s["guidance_scale"] == 2.5 and s.sources["guidance_scale"] == str(base / "controlnet" / SETTINGS_FILE)
    assert load_pipeline(base).model_settings.values == s.values
    # a ControlNet named beside it is the one used
    other = tiny_copy / "stage3" / "controlnet"
    _, s, _ = model_settings(base, other)
    assert (s["guidance_scale"], s["trajectory_palette"]) == (1.0, "release")
    assert load_pipeline(base, other).model_settings.values == s.values


def test_a_controlnet_object_brings_its_config_and_nothing_from_the_working_folder(tiny_copy, tmp_path,
                                                                                    monkeypatch):
    from magicmotion.models import WanTrajectoryControlNet

    cn = WanTrajectoryControlNet.from_pretrained(tiny_copy / "stage3" / "controlnet")
    work = tmp_path / "work"
    work.mkdir()
    write_settings_file(work, {"guidance_scale": 4.0, "num_inference_steps": 3})
    monkeypatch.chdir(work)
    _, s, _ = model_settings(tiny_copy / "base", cn)
    assert (s["trajectory_palette"], s.sources["trajectory_palette"]) == ("release", "ControlNet config")
    assert (s["guidance_scale"], s["num_inference_steps"]) == (1.0, 25)
    loaded = load_pipeline(tiny_copy / "base", cn).model_settings
    assert (loaded["guidance_scale"], loaded["num_inference_steps"]) == (1.0, 25)
    assert loaded.record() == s.record()


def test_a_cogvideox_bases_sample_size_is_its_default_size(models_dir):
    tcfg = json.loads((models_dir / "cog" / "transformer" / "config.json").read_text())
    family, s, limits = model_settings(models_dir / "cog", models_dir / "cog_cn")
    assert family == "cogvideox" and s["size"] == [tcfg["sample_width"] * 8, tcfg["sample_height"] * 8]
    assert s.sources["size"] == "cogvideox defaults" and "area" not in s.values
    assert load_pipeline(models_dir / "cog", models_dir / "cog_cn").model_settings.record() == s.record()


def test_unreadable_configs_are_named_before_any_weights_load(tiny_copy, tmp_path):
    import re

    config = tiny_copy / "stage1" / "controlnet" / "config.json"
    config.write_text("{not json")
    with pytest.raises(ModelError, match=rf"^{re.escape(str(config))}: unreadable \(.+\)$"):
        model_settings(None, None, "mask")
    model_settings(None, None, "box")  # the other stages are untouched
    vae = tiny_copy / "base" / "vae" / "config.json"
    vae.write_bytes(b"\xff\xfe{")
    with pytest.raises(ModelError, match=rf"^{re.escape(str(vae))}: unreadable \(.+\)$"):
        model_settings(None, None, "box")
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path / 'missing'))}: base model folder not found$"):
        model_settings(tmp_path / "missing", tiny_copy / "stage2" / "controlnet")


def test_a_cached_hub_base_has_its_settings_offline(tmp_path, monkeypatch):
    """A base named by hub id, the hub out of reach: its cached snapshot (found by its model_index.json)
    gives the settings and the pipeline."""
    for name in ("HF_HUB_CACHE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hf" / "hub" / "models--some-org--tiny"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(TINY_BASE, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    family, s, limits = model_settings("some-org/tiny", TINY_CN)
    _, local, local_limits = model_settings(TINY_BASE, TINY_CN)
    assert family == "wan" and s.values == local.values and limits == local_limits
    assert s.sources["guidance_scale"] == str(snapshot / SETTINGS_FILE)
    loaded = load_pipeline("some-org/tiny", TINY_CN).model_settings
    assert loaded.values == s.values and loaded.sources["guidance_scale"] == str(snapshot / SETTINGS_FILE)


def test_the_scheduler_a_model_asks_for_replaces_the_bases_keeping_its_config(models_dir, tmp_path):
    cn = tmp_path / "cn"
    shutil.copytree(models_dir / "cog_cn", cn)
    write_settings_file(cn, {"scheduler": "CogVideoXDDIMScheduler"})
    plain = load_pipeline(models_dir / "cog", models_dir / "cog_cn").scheduler
    asked = load_pipeline(models_dir / "cog", cn).scheduler
    assert type(plain).__name__ == "CogVideoXDPMScheduler" and type(asked).__name__ == "CogVideoXDDIMScheduler"
    for key in ("beta_end", "prediction_type", "rescale_betas_zero_snr", "timestep_spacing"):
        assert asked.config[key] == plain.config[key], key


def test_a_pipeline_built_without_a_controlnet_gets_its_bases_settings(tmp_path):
    """attach_settings on a pipeline built by hand with no ControlNet (a plain base run): the base's
    magicmotion.json and the family's defaults."""
    from magicmotion.pipelines.loading import attach_settings
    from magicmotion.pipelines.tiny import tiny_wan_components

    write_settings_file(tmp_path, {"guidance_scale": 3.5})
    pipe = attach_settings(MagicMotionWanPipeline(**tiny_wan_components(seed=0), controlnet=None), "wan", tmp_path)
    assert pipe.model_settings["guidance_scale"] == 3.5 and pipe.model_settings["fps"] == 16.0
    assert pipe.model_settings.sources["guidance_scale"] == str(tmp_path / SETTINGS_FILE)
