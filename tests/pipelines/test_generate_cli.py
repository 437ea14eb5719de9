"""`magicmotion generate` end to end (in-process), its outputs, and bad input: exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pipelines_helpers import make_image, make_trajectory

from magicmotion.cli import main
from magicmotion.io import read_video
from magicmotion.pipelines import loading
from magicmotion.trajectory import from_mask_frames, save


def generate_args(models_dir, inputs_dir, out="video.mp4", controlnet="wan_cn_trained", **extra) -> list[str]:
    args = ["generate", "--base", str(models_dir / "wan"), "--controlnet", str(models_dir / controlnet),
            "--image", str(inputs_dir / "first.png"), "--trajectory", str(inputs_dir / "spec.json"),
            "--prompt", "a red square moves right", "--out", str(inputs_dir / out), "--steps", "2"]
    for flag, value in extra.items():
        args += [f"--{flag.replace('_', '-')}", str(value)]
    return args


def test_generate_writes_video_preview_and_settings(models_dir, inputs_dir):
    # a 64x64 spec and image, generated at 32x32
    Image.fromarray(make_image(64)).save(inputs_dir / "first.png")
    save(make_trajectory(64), inputs_dir / "spec.json")
    assert main(generate_args(models_dir, inputs_dir, seed=7, size="32x32", frames=9, kind="box")) == 0
    frames, fps = read_video(inputs_dir / "video.mp4")
    assert frames.shape == (9, 32, 32, 3) and fps == 16
    with Image.open(inputs_dir / "video.preview.gif") as gif:
        assert gif.n_frames == 9 and gif.size == (32, 32)
    assert Image.open(inputs_dir / "video.preview.png").size == (4 * 8 * 32, 4 * 2 * 32)  # contact sheet, 9 frames, x4
    settings = json.loads((inputs_dir / "video.json").read_text())
    assert settings["seed"] == 7 and settings["steps"] == 2 and settings["kind"] == "box"
    assert (settings["num_frames"], settings["width"], settings["height"]) == (9, 32, 32)
    assert settings["model"] == "MagicMotionWanPipeline" and settings["outputs"]["video"] == "video.mp4"
    assert settings["trajectory_guidance"] == 1.0  # off unless asked for
    # the same seed makes the same video (compared on the lossless preview: x264 at 32x32 is not
    # bit-reproducible here)
    assert main(generate_args(models_dir, inputs_dir, out="again.mp4", seed=7, size="32x32")) == 0
    np.testing.assert_array_equal(np.array(Image.open(inputs_dir / "again.preview.png")),
                                  np.array(Image.open(inputs_dir / "video.preview.png")))


def test_generate_without_base_uses_the_shipped_tiny_model(models_dir, inputs_dir, monkeypatch, tmp_path):
    tiny = tmp_path / "tiny"
    (tiny / "stage3").mkdir(parents=True)
    (tiny / "base").symlink_to(models_dir / "wan", target_is_directory=True)
    (tiny / "stage3" / "controlnet").symlink_to(models_dir / "wan_cn_trained", target_is_directory=True)
    monkeypatch.setattr(loading, "TINY_MODEL_DIR", tiny)
    args = generate_args(models_dir, inputs_dir, kind="sparse_box", seed=1)
    args = args[:1] + args[5:]  # no --base, no --controlnet
    assert main(args) == 0
    settings = json.loads((inputs_dir / "video.json").read_text())
    assert settings["base"] == "tiny (shipped)" and "sparse_box" in settings["controlnet"]
    assert read_video(inputs_dir / "video.mp4")[0].shape == (9, 32, 32, 3)


@pytest.mark.filterwarnings("ignore:.*differs from the other masks")  # one judo mask is 853 pixels wide
def test_generate_on_real_sample(models_dir, real_samples, tmp_path, capsys):
    """A real first frame (854x480) and its DAVIS-style masks (objects appear on frames 0, 5, 8, 13)."""
    spec = from_mask_frames(real_samples / "masks" / "judo", num_frames=17)
    save(spec, tmp_path / "judo.json")
    args = ["generate", "--base", str(models_dir / "wan"), "--controlnet", str(models_dir / "wan_cn_trained"),
            "--image", str(real_samples / "images" / "judo" / "00000.jpg"), "--trajectory",
            str(tmp_path / "judo.json"), "--prompt", "two people doing judo", "--out", str(tmp_path / "judo-video.mp4"),
            "--steps", "1", "--size", "48x32", "--seed", "0"]
    assert main(args) == 0
    assert read_video(tmp_path / "judo-video.mp4")[0].shape == (17, 32, 48, 3)
    with Image.open(tmp_path / "judo-video.preview.gif") as gif:
        assert gif.n_frames == 17
    # the full annotation has 14 frames, which the video VAE cannot make
    save(from_mask_frames(real_samples / "masks" / "judo"), tmp_path / "judo14-spec.json")
    args[args.index("--trajectory") + 1] = str(tmp_path / "judo14-spec.json")
    args[args.index("--out") + 1] = str(tmp_path / "judo14.mp4")
    assert main(args) == 2
    assert "14 frames is not 4k + 1, as generation needs: use --frames 17" in capsys.readouterr().err
    assert not (tmp_path / "judo14.mp4").exists()


def bad_spec(inputs_dir, frames: int = 10):
    save(make_trajectory(frames=frames), inputs_dir / "spec.json")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d, a: a.__setitem__(a.index("--image") + 1, str(d / "missing.png")), "image not found"),
        (lambda d, a: a.__setitem__(a.index("--trajectory") + 1, str(d / "missing.json")), "trajectory not found"),
        (lambda d, a: bad_spec(d, 10), "10 frames"),
        (lambda d, a: bad_spec(d, 10), "use --frames 13 (the last frame held) or 9 (trimmed)"),
        (lambda d, a: a.extend(["--frames", "12"]), "--frames 12: the video VAE makes 4k + 1"),
        (lambda d, a: a.extend(["--kind", "circle"]), "unknown kind"),
        (lambda d, a: a.extend(["--size", "30x30"]), "multiples of 16"),
        (lambda d, a: a.extend(["--size", "big"]), "WIDTHxHEIGHT"),
        (lambda d, a: a.extend(["--offload", "disk"]), "unknown offload"),
        (lambda d, a: a.extend(["--trajectory-guidance", "-1"]), "--trajectory-guidance must be"),
            (lambda d, a: a.extend(["--guidance", "nan"]), "--guidance must be"),
            (lambda d, a: a.extend(["--control-scale", "inf"]), "--control-scale must be"),
            (lambda d, a: a.extend(["--size", "4096x4096"]), "more than this model can run"),
        (lambda d, a: a.__setitem__(a.index("--controlnet") + 1, a[a.index("--controlnet") + 1].replace(
            "wan_cn_trained", "wan_other_cn")), "does not fit this base"),
        (lambda d, a: a.__setitem__(a.index("--controlnet") + 1, a[a.index("--controlnet") + 1].replace(
            "wan_cn_trained", "cog_cn")), "cannot drive a wan base"),
        (lambda d, a: Image.fromarray(make_image(32)[:, :20]).save(d / "first.png"), "aspect ratios differ"),
        (lambda d, a: Image.fromarray(make_image(32)[:1, :1]).save(d / "first.png"), "at least 16 pixels"),
        (lambda d, a: a.__setitem__(a.index("--out") + 1, str(d / "nowhere" / "video.mp4")), "does not exist"),
        (lambda d, a: a.__setitem__(a.index("--out") + 1, str(d / "video.avi")), "must be an .mp4"),
        (lambda d, a: (d / "spec.json").write_text("{not json"), "spec.json"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(models_dir, inputs_dir, capsys, change, message):
    args = generate_args(models_dir, inputs_dir, seed=0)
    change(inputs_dir, args)
    before = sorted(p.name for p in inputs_dir.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("magicmotion: error:") and message in err
    assert sorted(p.name for p in inputs_dir.iterdir()) == before
