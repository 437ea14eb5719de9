"""What a new user gives, end to end with the shipped tiny model: a 1280x853 photo as a 16-bit PNG, an
RGBA PNG and a phone's EXIF-rotated JPEG; the real judo and bike annotations through `trajectory
from-masks` and `generate`, following what the messages suggest."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from magicmotion.cli import main
from magicmotion.io import read_video
from magicmotion.pipelines.conditions import prepare_conditions
from magicmotion.trajectory import ObjectTrack, Trajectory, load, resize_crop, save

RUN = ["--prompt", "a person", "--steps", "1", "--size", "48x32", "--seed", "0"]


def photo(real_samples) -> np.ndarray:
    """A 1280x853 photo-like picture: a frame of the real video, cropped to 3:2 and enlarged."""
    frames, _ = read_video(real_samples / "example.mp4", max_frames=1)
    return np.asarray(Image.fromarray(frames[0][27:454]).resize((1280, 853), Image.BICUBIC))


def box_spec(w: int, h: int) -> Trajectory:
    return Trajectory(w, h, 9, [ObjectTrack(1, "person", boxes={0: np.array([0.3 * w, 0.3 * h, 0.6 * w, 0.9 * h]),
                                                              8: np.array([0.4 * w, 0.3 * h, 0.7 * w, 0.9 * h])})])


def test_user_photos_through_generate(real_samples, tmp_path, capsys):
    rgb = photo(real_samples)
    # a 16-bit PNG of the photo: the same picture as the 8-bit one (v * 257 back to v)
    Image.fromarray(rgb.astype(np.uint16).mean(axis=2).round().astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    grey = np.repeat(rgb.astype(np.uint16).mean(axis=2).round().astype(np.uint8)[..., None], 3, axis=2)
    # an RGBA PNG: the photo with a transparent band hiding magenta
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, :400, :3], rgba[:, :400, 3] = (255, 0, 255), 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    over_white = rgb.copy()
    over_white[:, :400] = 255
    # a phone's portrait photo: stored landscape, EXIF orientation 6
    portrait = np.ascontiguousarray(np.rot90(rgb, k=-1)[:1280])  # 853 wide, 1280 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(portrait, k=1))).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "phone.jpg") as im:
        assert im.size == (1280, 853)  # stored landscape
        seen = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))  # Pillow's own view of it
    save(box_spec(1280, 853), tmp_path / "landscape.json")
    save(box_spec(853, 1280), tmp_path / "portrait.json")

    for name, spec, expected in (("grey16.png", "landscape.json", grey), ("cutout.png", "landscape.json", over_white),
                                 ("phone.jpg", "portrait.json", seen)):
        size = (48, 32) if spec[0] == "l" else (32, 48)
        cond = prepare_conditions(tmp_path / name, load(tmp_path / spec), "box", size)
        # one uint8 level of resize rounding allowed (measured 0 for all three)
        assert np.abs(cond.image.astype(int) - resize_crop(expected, size).astype(int)).max() <= 1, name
        out = tmp_path / f"{name}.mp4"
        args = ["generate", "--image", str(tmp_path / name), "--trajectory", str(tmp_path / spec),
                "--out", str(out), *RUN]
        if spec[0] == "p":
            args[args.index("--size") + 1] = "32x48"
        assert main(args) == 0, capsys.readouterr().err
        frames, _ = read_video(out)
        assert frames.shape == ((9, 32, 48, 3) if spec[0] == "l" else (9, 48, 32, 3))
    err = capsys.readouterr().err
    assert err.count("cutout.png: has transparent pixels; composited over white") == 1


def suggested(err: str, flag: str) -> int:
    """The frame count a message suggests for `flag`."""
    m = re.search(rf"{flag} (\d+)", err)
    assert m, err
    return int(m.group(1))


@pytest.mark.parametrize("name", ["judo", "bike"])
def test_real_annotations_become_generable(real_samples, tmp_path, capsys, name):
    """from-masks on the real sparse annotations, then generate with the shipped tiny model: where the
    frame count will not do, the messages say what to give, and giving it works."""
    masks, image = real_samples / "masks" / name, real_samples / "images" / name / "00000.jpg"
    n_images = len(list((real_samples / "images" / name).glob("*.jpg")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["trajectory", "from-masks", str(masks), "--out", str(tmp_path / "t.json"),
                     "--num-frames", str(n_images if name == "bike" else 14)]) == 0
    err = capsys.readouterr().err
    frames = suggested(err, "--num-frames")  # judo: 14 frames -> 17; bike: 4 -> 5
    assert frames == {"judo": 17, "bike": 5}[name]
    # generate on the spec as it is: refused, saying which --frames to give
    gen = ["generate", "--image", str(image), "--trajectory", str(tmp_path / "t.json"), *RUN]
    assert main([*gen, "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err
    assert "is not 4k + 1" in err and not (tmp_path / "a.mp4").exists()
    assert suggested(err, "--frames") == frames
    # either what from-masks suggested ...
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["trajectory", "from-masks", str(masks), "--out", str(tmp_path / "t.json"),
                     "--num-frames", str(frames)]) == 0
    assert "4k + 1" not in capsys.readouterr().err
    assert main([*gen, "--out", str(tmp_path / "b.mp4")]) == 0
    assert read_video(tmp_path / "b.mp4")[0].shape == (frames, 32, 48, 3)
    if name == "judo":  # ... or what generate suggested, on the 14-frame spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["trajectory", "from-masks", str(masks), "--out", str(tmp_path / "t14.json")]) == 0
        gen[gen.index("--trajectory") + 1] = str(tmp_path / "t14.json")
        capsys.readouterr()
        assert main([*gen, "--out", str(tmp_path / "c.mp4"), "--frames", str(frames)]) == 0
        assert "14 frames padded to 17, the last frame held (--frames)" in capsys.readouterr().err
        assert read_video(tmp_path / "c.mp4")[0].shape == (17, 32, 48, 3)


def test_library_refusals_say_which_count():
    """The pipelines' own refusal (Python API) names the counts to use and how to get there."""
    from types import SimpleNamespace

    from magicmotion.errors import PipelineError
    from magicmotion.pipelines.conditions import check_call_inputs

    pipe = SimpleNamespace(vae_scale_factor_temporal=4)
    with pytest.raises(PipelineError, match=r"14 frames: the VAE needs \(frames - 1\) divisible by 4: use 13 or 17 "
                                            r"\(a spec: magicmotion.trajectory.with_num_frames"):
        check_call_inputs(pipe, "a person", None, "box", 14, 32, 48, 1, 1.0)
    with pytest.raises(PipelineError, match=r"the trajectory has 14 frames but 17 were asked for; bring it to 17"):
        check_call_inputs(pipe, "a person", None, "box", 17, 32, 48, 1, 1.0, trajectory_frames=14)
