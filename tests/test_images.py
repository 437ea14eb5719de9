"""Every image a user may give, read as a person expects (io.read_image / read_labels), checked against
Pillow's and OpenCV's own conversions: 8/16-bit, grey, palette, transparency, CMYK, EXIF orientation,
animations, HEIC; and mask files (16-bit, palette) read as object ids."""

from __future__ import annotations

import builtins
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from magicmotion import io as mio
from magicmotion.errors import BenchError, MediaError, TrajectoryError
from magicmotion.io import ALPHA_BACKGROUND, read_image, read_labels

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-samples"
SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))


def cv2_rgb(path) -> np.ndarray:
    """OpenCV's reading of an image file as 8-bit colour (16-bit: v >> 8; EXIF orientation applied)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"OpenCV cannot read {path}"
    return bgr[..., ::-1]


def pil_over_white(im: Image.Image) -> np.ndarray:
    """Pillow's own compositing of an image with alpha over ALPHA_BACKGROUND."""
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))


def max_diff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int64) - np.asarray(b, np.int64)).max())


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    """Each test sees its own 'said once' notes."""
    monkeypatch.setattr(mio, "_NOTED", set())


# ---------------------------------------------------------------------------------------- 16-bit


@settings(**SETTINGS)
@given(size=sizes, seed=st.integers(0, 2**16), dark=st.booleans())
def test_sixteen_bit_grey_png_as_opencv_reads_it(tmp_path, size, seed, dark):
    """A 16-bit grey PNG (Pillow mode I;16): within one level of OpenCV's 8-bit conversion (OpenCV
    drops the low byte, v >> 8; ours rounds v / 257, so that 65535 is 255: at most 1 apart)."""
    h, w = size
    top = 4096 if dark else 65536  # a dark image must not come out white (or black)
    values = np.random.default_rng(seed).integers(0, top, (h, w), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), values)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "I;16"
    out = read_image(tmp_path / "g.png")
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert max_diff(out, cv2_rgb(tmp_path / "g.png")) <= 1
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()


def test_sixteen_bit_grey_matches_its_eight_bit_version(tmp_path):
    """The issue's case: the same picture as 16-bit and as 8-bit PNG read the same (before: off by 69/255
    on average, white where values passed 255)."""
    grey = cv2.imread(str(REAL / "images" / "judo" / "00000.jpg"), cv2.IMREAD_GRAYSCALE)
    if grey is None:  # a user's clone without the real samples: a ramp
        grey = (np.arange(64 * 96).reshape(64, 96) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g8.png"), grey)
    cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), read_image(tmp_path / "g8.png"))


@settings(**SETTINGS)
@given(size=sizes, seed=st.integers(0, 2**16), alpha=st.booleans())
def test_sixteen_bit_colour_png_written_by_opencv(tmp_path, size, seed, alpha):
    """16-bit RGB(A) PNGs written by OpenCV: the same as OpenCV reads them back in 8 bits (alpha: the
    composite over white of OpenCV's 8-bit colour and alpha)."""
    h, w = size
    rng = np.random.default_rng(seed)
    bgr = rng.integers(0, 65536, (h, w, 4 if alpha else 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    out = read_image(tmp_path / "c.png")
    if not alpha:
        assert max_diff(out, cv2_rgb(tmp_path / "c.png")) <= 1
        return
    bgra = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)  # 16-bit, unconverted
    a = (bgra[..., 3:] >> 8).astype(np.float64) / 255
    expected = (bgra[..., 2::-1] >> 8) * a + np.array(ALPHA_BACKGROUND) * (1 - a)
    assert max_diff(out, np.floor(expected + 0.5)) <= 1  # the 8-bit cut of colour and alpha rounds once more


def test_thirty_two_bit_integer_image_as_sixteen_bit(tmp_path):
    """Pillow mode I (a 32-bit TIFF, or a PIL image given to the pipeline): values read as 16-bit,
    the same as the 16-bit PNG of those values that OpenCV reads."""
    from magicmotion.pipelines.conditions import read_image as read_first_frame

    values = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i.tif")
    cv2.imwrite(str(tmp_path / "i.png"), values.astype(np.uint16))
    with Image.open(tmp_path / "i.tif") as im:
        assert im.mode == "I"
        from_pil = read_first_frame(im)
    truth = cv2_rgb(tmp_path / "i.png")
    assert max_diff(read_image(tmp_path / "i.tif"), truth) <= 1
    assert max_diff(from_pil, truth) <= 1


# ---------------------------------------------------------------------------------------- 8-bit modes


@settings(**SETTINGS)
@given(size=sizes, seed=st.integers(0, 2**16), mode=st.sampled_from(["RGB", "L", "P", "1", "CMYK"]))
def test_opaque_modes_as_pillow_converts_them(tmp_path, size, seed, mode):
    """Opaque 8-bit modes: exactly Pillow's conversion to RGB; as PNG (where PNG holds the mode) also
    exactly what OpenCV reads."""
    h, w = size
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    suffix = ".png" if mode in ("RGB", "L", "P", "1") else ".tif"
    im.save(tmp_path / f"a{suffix}")
    out = read_image(tmp_path / f"a{suffix}")
    assert out.shape == (h, w, 3) and out.dtype == np.uint8 and out.flags.writeable  # callers draw on it
    np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))
    if suffix == ".png":
        np.testing.assert_array_equal(out, cv2_rgb(tmp_path / "a.png"))


@settings(**SETTINGS)
@given(size=sizes, seed=st.integers(0, 2**16), mode=st.sampled_from(["RGBA", "LA", "P-alpha", "P-trns"]))
def test_transparency_composited_over_white(tmp_path, size, seed, mode):
    """RGBA, LA, palette with alpha or a transparent index: Pillow's alpha_composite over white, within
    one level (Pillow's compositing and ours round the same product differently)."""
    h, w = size
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    im = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        im = im.convert("LA")
    elif mode == "P-alpha":  # a palette with an alpha per entry (PNG tRNS)
        im = im.quantize(method=Image.Quantize.FASTOCTREE)
    elif mode == "P-trns":
        im = Image.fromarray(rgba[..., :3]).convert("P")
        im.info["transparency"] = int(np.asarray(im)[0, 0])
    im.save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as back:
        expected = pil_over_white(back)
    assert max_diff(read_image(tmp_path / "a.png"), expected) <= 1


def test_magenta_under_transparent_pixels_does_not_show(tmp_path, capsys):
    """The issue's case: an RGBA PNG whose transparent third hides magenta. Said once on stderr."""
    rgba = np.zeros((30, 60, 4), np.uint8)
    rgba[..., :3] = (255, 0, 255)
    rgba[:, :20, 3] = 0  # transparent magenta
    rgba[:, 20:, :3] = (40, 120, 200)
    rgba[:, 20:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    out = read_image(tmp_path / "cut.png")
    assert (out[:, :20] == ALPHA_BACKGROUND).all() and (out[:, 20:] == (40, 120, 200)).all()
    read_image(tmp_path / "cut.png")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("magicmotion: note: ")
    assert "cut.png: has transparent pixels; composited over white" in err
    # an RGBA image with every pixel opaque is read as it is, without a note
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png"), rgba[..., :3])
    assert capsys.readouterr().err == ""


def test_cmyk_jpeg_as_opencv_reads_it(tmp_path):
    """A CMYK JPEG (Adobe, as Pillow and Photoshop write it): OpenCV's RGB within one level (the two
    convert CMYK to RGB with differently rounded products)."""
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "k.jpg", quality=95)
    with Image.open(tmp_path / "k.jpg") as im:
        assert im.mode == "CMYK"
    assert max_diff(read_image(tmp_path / "k.jpg"), cv2_rgb(tmp_path / "k.jpg")) <= 1


# ---------------------------------------------------------------------------------------- EXIF, animations


@settings(**SETTINGS)
@given(orientation=st.integers(1, 8), size=st.tuples(st.integers(2, 40), st.integers(2, 40)))
def test_exif_orientation_applied(tmp_path, orientation, size):
    """A JPEG with EXIF orientation 1..8: exactly ImageOps.exif_transpose's picture, and what OpenCV
    shows (it applies the orientation too)."""
    h, w = size
    rgb = np.random.default_rng(orientation).integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "o.jpg")
    with Image.open(tmp_path / "o.jpg") as im:
        np.testing.assert_array_equal(out, np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
    np.testing.assert_array_equal(out, cv2_rgb(tmp_path / "o.jpg"))
    if orientation in (5, 6, 7, 8):
        assert out.shape[:2] == (w, h)


def test_phone_portrait_jpeg(tmp_path):
    """The issue's case: a phone stores a portrait photo landscape with orientation 6 (rotate 90
    clockwise to view): it reads portrait, the top of the scene on top."""
    scene = np.zeros((64, 48, 3), np.uint8)  # portrait: a red top half, a blue bottom half
    scene[:32] = (220, 30, 30)
    scene[32:] = (30, 30, 220)
    stored = np.rot90(scene, k=1)  # what the sensor wrote: the scene turned 90 counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "phone.jpg")
    assert out.shape == (64, 48, 3)
    assert max_diff(out[4:28], scene[4:28]) <= 8 and max_diff(out[36:60], scene[36:60]) <= 8  # JPEG's error


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_first_frame_of_an_animation(tmp_path, suffix):
    """Animated GIF, WebP and APNG: the first frame, exactly as drawn (few colours, lossless)."""
    frames = [np.zeros((20, 30, 3), np.uint8) for _ in range(3)]
    for k, f in enumerate(frames):
        f[:, :] = (10 + 90 * k, 200 - 90 * k, 60)
        f[5:10, 5 + 5 * k:10 + 5 * k] = (250, 250, 0)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / f"a{suffix}", save_all=True, append_images=images[1:], duration=100,
                   **({"lossless": True} if suffix == ".webp" else {}))
    with Image.open(tmp_path / f"a{suffix}") as im:
        assert im.n_frames == 3
    np.testing.assert_array_equal(read_image(tmp_path / f"a{suffix}"), frames[0])
    if suffix == ".gif" and cv2.haveImageReader(str(tmp_path / "a.gif")):
        np.testing.assert_array_equal(read_image(tmp_path / "a.gif"), cv2_rgb(tmp_path / "a.gif"))


# ---------------------------------------------------------------------------------------- HEIC


def heic_header(path):
    """The first bytes of an iPhone HEIC (an ISO box 'ftyp' of brand 'heic'), then nothing usable."""
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))


def test_heic_without_pillow_heif_names_the_package(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_heif(name, *args, **kwargs):
        if name == "pillow_heif":
            raise ImportError("No module named 'pillow_heif'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_heif)
    heic_header(tmp_path / "IMG_0001.HEIC")
    with pytest.raises(MediaError, match=r"IMG_0001\.HEIC: a HEIC/HEIF image; install the pillow-heif package"):
        read_image(tmp_path / "IMG_0001.HEIC")


def test_heic_with_pillow_heif(tmp_path):
    """Where pillow-heif is installed (the `heic` extra): the picture its own decoder gives."""
    pillow_heif = pytest.importorskip("pillow_heif")
    yy, xx = np.mgrid[:32, :48]
    rgb = np.stack([xx * 5, yy * 7, np.full_like(xx, 120)], axis=2).astype(np.uint8)  # smooth: HEIC is lossy
    pillow_heif.from_bytes(mode="RGB", size=(48, 32), data=rgb.tobytes()).save(tmp_path / "a.heic", quality=90)
    out = read_image(tmp_path / "a.heic")
    np.testing.assert_array_equal(out, np.asarray(pillow_heif.open_heif(tmp_path / "a.heic").to_pillow().convert("RGB")))
    assert np.abs(out.astype(int) - rgb).mean() < 8  # lossy coding of a smooth picture: measured 1.9 levels


# ---------------------------------------------------------------------------------------- masks as ids


@settings(**SETTINGS)
@given(size=sizes, seed=st.integers(0, 2**16), ids=st.sets(st.integers(1, 65535), min_size=1, max_size=5))
def test_sixteen_bit_label_png_read_as_ids(tmp_path, size, seed, ids):
    """A 16-bit instance mask (ids beyond 255) written by OpenCV: the values as OpenCV reads them
    unchanged (IMREAD_UNCHANGED), and a from-masks folder of them keeps every id."""
    from magicmotion.trajectory import from_mask_frames

    h, w = size
    labels = np.random.default_rng(seed).choice([0, *sorted(ids)], (h, w)).astype(np.uint16)
    (tmp_path / "m").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "m" / "00000.png"), labels)
    truth = cv2.imread(str(tmp_path / "m" / "00000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(read_labels(tmp_path / "m" / "00000.png"), truth)
    present = sorted(int(i) for i in np.unique(labels) if i)
    if present:
        traj = from_mask_frames(tmp_path / "m", fill="none")
        assert traj.ids == present
        for oid in present:
            np.testing.assert_array_equal(traj.object(oid).mask(0), truth == oid)


def test_palette_label_png_read_as_indices(tmp_path):
    """A DAVIS palette PNG: the indices, not the colours (Pillow's np.asarray of the P image); with a
    transparent index too."""
    labels = np.zeros((24, 32), np.uint8)
    labels[2:10, 3:12], labels[12:20, 15:30] = 1, 7
    im = Image.fromarray(labels, "P")
    im.putpalette([0, 0, 0, 128, 0, 0] + [50, 60, 70] * 254)
    im.save(tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(read_labels(tmp_path / "p.png"), labels)


def test_mask_files_in_a_spec_and_in_davis_read_through_the_loader(tmp_path):
    """A spec's mask file given as 16-bit grey, and a DAVIS annotation as 16-bit: read as ids."""
    from magicmotion.bench.sets import _read_label_png as read_davis
    from magicmotion.trajectory import load

    mask = np.zeros((16, 24), np.uint16)
    mask[4:9, 6:15] = 1000
    cv2.imwrite(str(tmp_path / "m16.png"), mask)
    spec = {"version": 1, "width": 24, "height": 16, "num_frames": 1,
            "objects": [{"id": 1, "masks": {"0": "m16.png"}}]}
    (tmp_path / "s.json").write_text(__import__("json").dumps(spec))
    np.testing.assert_array_equal(load(tmp_path / "s.json").object(1).mask(0), mask > 0)
    labels, resized = read_davis(tmp_path / "m16.png", (24, 16))
    assert not resized
    np.testing.assert_array_equal(labels, mask)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BenchError, match=r"bad\.png: unreadable PNG"):
        read_davis(tmp_path / "bad.png", (24, 16))
    spec["objects"][0]["masks"]["0"] = "bad.png"
    (tmp_path / "s.json").write_text(__import__("json").dumps(spec))
    with pytest.raises(TrajectoryError, match=r"object 1 frame 0: mask .*bad\.png is not a readable image"):
        load(tmp_path / "s.json")


# ---------------------------------------------------------------------------------------- the app


def test_app_first_frame_through_the_loader(tmp_path):
    """The app's upload (a path) and arrays it is handed: the same pictures as read_image gives."""
    from magicmotion.app.drawing import check_image, read_first_frame

    values = (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    np.testing.assert_array_equal(read_first_frame(tmp_path / "g16.png"), read_image(tmp_path / "g16.png"))
    assert max_diff(read_first_frame(tmp_path / "g16.png"), cv2_rgb(tmp_path / "g16.png")) <= 1
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(tmp_path / "o.jpg", exif=exif)
    assert read_first_frame(tmp_path / "o.jpg").shape == (50, 30, 3)
    rgba = np.random.default_rng(1).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    assert max_diff(check_image(rgba), pil_over_white(Image.fromarray(rgba, "RGBA"))) <= 1
    assert max_diff(check_image(np.repeat(values[..., None], 3, axis=2)), cv2_rgb(tmp_path / "g16.png")) <= 1
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(MediaError, match=r"^x\.png: not an image the app can read"):
        read_first_frame(tmp_path / "x.png")


def test_frame_folders_composite_over_black(tmp_path, capsys):
    """Frames in a folder (videos, trajectory maps) are composited over black, the maps' background:
    an RGBA map whose background is transparent reads as drawn on black."""
    from magicmotion.io import read_video

    (tmp_path / "maps").mkdir()
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[4:10, 5:15] = (128, 0, 0, 255)
    for t in range(2):
        Image.fromarray(rgba, "RGBA").save(tmp_path / "maps" / f"{t:05d}.png")
    frames, _ = read_video(tmp_path / "maps")
    np.testing.assert_array_equal(frames[0], rgba[..., :3])
    assert "composited over black" in capsys.readouterr().err
