"""Image and video I/O: round trips through PyAV and Pillow, atomic writes, previews, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from magicmotion.errors import MediaError
from magicmotion.io import (atomic_path, contact_sheet, overlay, read_image, read_video, write_frames,
                            write_image, write_preview, write_video)

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-samples"


def moving_square(T=6, h=32, w=48) -> np.ndarray:
    """uint8 (T, h, w, 3): a smooth background with a bright square moving right."""
    yy, xx = np.mgrid[:h, :w]
    frames = np.zeros((T, h, w, 3), np.uint8)
    for t in range(T):
        frames[t, ..., 0] = 40 + xx * 2
        frames[t, ..., 1] = 60 + yy * 2
        frames[t, ..., 2] = 90
        frames[t, 8:20, 4 + 4 * t:16 + 4 * t] = (230, 230, 40)
    return frames


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_read_image_modes(tmp_path, mode):
    rgb = moving_square(1)[0]
    im = Image.fromarray(rgb)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(out, rgb)


def test_write_image_round_trip(tmp_path):
    rgb = moving_square(1)[0]
    write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    write_image(tmp_path / "a.jpg", rgb)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - rgb).mean() < 6  # JPEG's loss: measured 3.5
    assert listing(tmp_path) == ["a.jpg", "a.png"]
    with pytest.raises(MediaError, match="an image must be"):
        write_image(tmp_path / "b.png", np.zeros((4, 4, 2), np.uint8))


def test_read_image_errors(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.png: image not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(MediaError, match=r"text\.png: unreadable image"):
        read_image(tmp_path / "text.png")
    Image.fromarray(moving_square(1)[0]).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.jpg: unreadable image"):
        read_image(tmp_path / "cut.jpg")


# ---------------------------------------------------------------------------------------- videos


def test_video_round_trip(tmp_path):
    frames = moving_square(9)
    path = write_video(tmp_path / "v.mp4", frames, fps=12)
    assert listing(tmp_path) == ["v.mp4"]  # no temporary file left
    back, fps = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert fps == pytest.approx(12)
    # H.264 at crf 18: measured 2.0 levels on average; the frames one step late (an off-by-one read), 8.7
    assert np.abs(back.astype(int) - frames).mean() < 4
    assert np.abs(back[1:].astype(int) - frames[:-1]).mean() > 4
    # the square is where it was drawn on every frame
    for t in range(9):
        assert back[t, 14, 10 + 4 * t, 2] < 90 and back[t, 14, 10 + 4 * t, 0] > 200
    first, _ = read_video(path, max_frames=3)
    np.testing.assert_array_equal(first, back[:3])


def test_video_odd_size_is_padded(tmp_path):
    frames = moving_square(3, h=15, w=21)
    back, _ = read_video(write_video(tmp_path / "odd.mp4", frames, fps=8))
    assert back.shape == (3, 16, 22, 3)
    # H.264 crf 18 of a 15x21 picture: measured 3.3 levels; the frames one step late, 20.4
    assert np.abs(back[:, :15, :21].astype(int) - frames).mean() < 6
    assert np.abs(back[1:, :15, :21].astype(int) - frames[:-1]).mean() > 6


def test_video_fractional_fps(tmp_path):
    _, fps = read_video(write_video(tmp_path / "v.mp4", moving_square(4), fps=29.97))
    assert fps == pytest.approx(29.97, abs=0.01)  # measured 29.97 exactly; 0.01 also takes 30000/1001


def test_read_real_video():
    path = REAL / "example.mp4"
    if not path.is_file():
        pytest.skip(f"real samples not found at {REAL.resolve()}")
    frames, fps = read_video(path, max_frames=5)
    assert frames.shape == (5, 480, 640, 3)
    assert fps == pytest.approx(25)
    assert frames.std() > 10  # real content, not a blank (measured 44.5)


def test_read_video_errors(tmp_path):
    with pytest.raises(MediaError, match=r"none\.mp4: video not found"):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "text.mp4").write_text("not a video at all")
    with pytest.raises(MediaError, match=r"text\.mp4: unreadable video"):
        read_video(tmp_path / "text.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: "):
        read_video(tmp_path / "empty.mp4")
    write_video(tmp_path / "v.mp4", moving_square(8), fps=8)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError, match=r"cut\.mp4: "):
        read_video(tmp_path / "cut.mp4")
    with pytest.raises(MediaError, match="max_frames must be at least 1"):
        read_video(tmp_path / "v.mp4", max_frames=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match=r"empty: no frames"):
        read_video(tmp_path / "empty")


def test_write_video_errors(tmp_path):
    with pytest.raises(MediaError, match=r"frames must be \(T, H, W, 3\)"):
        write_video(tmp_path / "v.mp4", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(MediaError, match=r"frames must be"):
        write_video(tmp_path / "v.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(MediaError, match="fps must be positive"):
        write_video(tmp_path / "v.mp4", moving_square(2), fps=0)
    with pytest.raises(MediaError, match=r"output folder .*missing does not exist"):
        write_video(tmp_path / "missing" / "v.mp4", moving_square(2))
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------- frames


def test_frames_round_trip(tmp_path):
    frames = moving_square(4)
    write_frames(tmp_path / "f", frames)
    assert listing(tmp_path) == ["f"]
    assert listing(tmp_path / "f") == ["00000.png", "00001.png", "00002.png", "00003.png"]
    back, fps = read_video(tmp_path / "f")
    np.testing.assert_array_equal(back, frames)  # PNG is lossless
    assert fps == 8.0
    assert read_video(tmp_path / "f", max_frames=2)[0].shape[0] == 2


def test_frames_into_an_existing_folder(tmp_path):
    folder = tmp_path / "out"
    write_frames(folder, moving_square(5))
    (folder / "notes.txt").write_text("mine")
    frames = moving_square(3)[::-1].copy()
    write_frames(folder, frames)
    # other files stay, frames from the longer earlier write go, no temporary folder is left
    assert listing(folder) == ["00000.png", "00001.png", "00002.png", "notes.txt"]
    np.testing.assert_array_equal(read_image(folder / "00000.png"), frames[0])


def test_frames_folder_sizes_must_match(tmp_path):
    write_frames(tmp_path / "f", moving_square(2))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "f" / "00002.png")
    with pytest.raises(MediaError, match=r"00002\.png: size differs from 00000\.png"):
        read_video(tmp_path / "f")


def test_frames_errors(tmp_path):
    with pytest.raises(MediaError, match=r"output folder .*missing does not exist"):
        write_frames(tmp_path / "missing" / "f", moving_square(2))
    (tmp_path / "file").write_text("x")
    with pytest.raises(MediaError, match="is a file, expected a folder"):
        write_frames(tmp_path / "file", moving_square(2))
    assert listing(tmp_path) == ["file"]


# ---------------------------------------------------------------------------------------- atomic


def test_atomic_path_cleans_up_on_error(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and listing(tmp_path) == ["x.txt"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new" and listing(tmp_path) == ["x.txt"]


def test_atomic_directory(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("interrupted")
    assert listing(target) == ["a"] and listing(tmp_path) == ["model"]
    with atomic_path(target, directory=True) as tmp:
        (tmp / "c").write_text("3")
    assert listing(target) == ["c"] and listing(tmp_path) == ["model"]


def test_atomic_path_errors(tmp_path):
    with pytest.raises(MediaError, match=r"output folder .*nope does not exist"):
        with atomic_path(tmp_path / "nope" / "x.txt"):
            pass
    (tmp_path / "d").mkdir()
    with pytest.raises(MediaError, match="is a folder, expected a file name"):
        with atomic_path(tmp_path / "d"):
            pass


# ---------------------------------------------------------------------------------------- previews


def test_overlay():
    frames = np.full((1, 2, 2, 3), 100, np.uint8)
    maps = np.zeros((1, 2, 2, 3), np.uint8)
    maps[0, 0, 0] = (200, 0, 0)
    out = overlay(frames, maps, alpha=0.5)
    assert tuple(out[0, 0, 0]) == (150, 50, 50)  # blended where the map is drawn
    assert (out[0, 1] == 100).all() and (out[0, 0, 1] == 100).all()  # unchanged elsewhere
    np.testing.assert_array_equal(overlay(frames, maps, alpha=1.0)[0, 0, 0], (200, 0, 0))
    with pytest.raises(MediaError, match="differ in shape"):
        overlay(frames, maps[:, :1])


def test_contact_sheet():
    frames = np.stack([np.full((4, 6, 3), i, np.uint8) for i in range(20)])
    sheet = contact_sheet(frames)
    assert sheet.shape == (2 * 4, 8 * 6, 3)  # 16 frames, 8 to a row
    assert sheet[0, 0, 0] == 0 and sheet[-1, -1, 0] == 19  # first and last frames kept
    assert contact_sheet(frames[:3]).shape == (4, 18, 3)


def test_contact_sheet_enlarges_small_frames_by_whole_pixels(tmp_path):
    """A 17-frame 64x64 video: a sheet of 16 frames, each enlarged twice (each pixel a 2x2 block),
    so the sheet is 1024 pixels wide; 720x480 frames are kept as they are."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(17, 64, 64, 3), dtype=np.uint8)
    write_preview(tmp_path / "small.png", frames)
    sheet = read_image(tmp_path / "small.png")
    assert sheet.shape[1] >= 1000 and sheet.shape == (2 * 128, 8 * 128, 3)
    idx = np.linspace(0, 16, 16).round().astype(int)
    for i, t in enumerate(idx):
        r, q = divmod(i, 8)
        tile = sheet[r * 128:(r + 1) * 128, q * 128:(q + 1) * 128]
        for dy in (0, 1):
            for dx in (0, 1):  # every pixel of each 2x2 block is the frame's pixel
                np.testing.assert_array_equal(tile[dy::2, dx::2], frames[t])
    one = contact_sheet(frames[:1], min_width=1000)
    assert one.shape == (512, 512, 3)  # one small frame: enlarged up to the largest side allowed
    np.testing.assert_array_equal(one[::8, ::8], frames[0])

    big = np.zeros((17, 480, 720, 3), np.uint8)
    big[:, 100:200, 300:400] = 255
    write_preview(tmp_path / "big.png", big)
    sheet = read_image(tmp_path / "big.png")
    assert sheet.shape == (2 * 480, 8 * 720, 3)
    np.testing.assert_array_equal(sheet[:480, :720], big[0])
    assert contact_sheet(big[:3], min_width=1000).shape == (480, 3 * 720, 3)
    assert contact_sheet(frames).shape == (2 * 64, 8 * 64, 3)  # min_width 0: as they are


def test_write_preview(tmp_path):
    frames = moving_square(5)
    maps = np.zeros_like(frames)
    maps[:, 2:6, 2:6] = (128, 0, 0)
    write_preview(tmp_path / "p.png", frames, maps)
    sheet = read_image(tmp_path / "p.png")
    assert sheet.shape == (5 * 32, 5 * 5 * 48, 3)  # small frames enlarged 5 times: 1200 pixels wide
    np.testing.assert_array_equal(sheet[::5, :5 * 48:5], overlay(frames, maps)[0])
    write_preview(tmp_path / "p.gif", frames, maps, fps=10)
    with Image.open(tmp_path / "p.gif") as im:
        assert im.n_frames == 5 and im.size == (48, 32)
        assert im.info["duration"] == 100
    write_preview(tmp_path / "p.mp4", frames, maps)
    assert read_video(tmp_path / "p.mp4")[0].shape == frames.shape
    assert listing(tmp_path) == ["p.gif", "p.mp4", "p.png"]
    with pytest.raises(MediaError, match=r"p\.avi: a preview is a"):
        write_preview(tmp_path / "p.avi", frames, maps)
    assert listing(tmp_path) == ["p.gif", "p.mp4", "p.png"]
