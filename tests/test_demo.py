"""`magicmotion demo` (what `make demo` runs), issue 38: one labelled picture per run, its path printed;
one progress bar per long step (the denoising of each video), no library loading bars or warnings
unless --verbose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_demo(tmp_path, *extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "magicmotion", "demo", "--kind", "box", "--steps", "2",
                           "--out", str(tmp_path / "demo"), *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_demo_writes_one_labelled_picture_and_one_bar_per_video(tmp_path):
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stderr
    sheet_path = tmp_path / "demo" / "demo.png"
    assert f"look at {sheet_path}" in done.stdout
    sheet = np.asarray(Image.open(sheet_path).convert("RGB"))
    # two rows (the true clip, box): label + first frame + trajectory + 6 frames, 64x64 frames enlarged
    # 3x to 192
    from magicmotion.sheet import GAP, LABEL_HEIGHT, ROW_LABEL_WIDTH, TILE

    assert sheet.shape == (LABEL_HEIGHT + 2 * (TILE + GAP) + GAP, ROW_LABEL_WIDTH + 8 * (TILE + GAP) + GAP, 3)
    first = np.asarray(Image.open(ROOT / "examples" / "first_frame.png").convert("RGB"))
    y, x = LABEL_HEIGHT + GAP, ROW_LABEL_WIDTH + GAP
    for row in range(2):
        top = y + row * (TILE + GAP)
        assert np.array_equal(sheet[top:top + TILE, x:x + TILE], first.repeat(3, axis=0).repeat(3, axis=1))
    # the first row's last tile is the true clip's last frame, as PyAV decodes source.mp4
    import av

    with av.open(str(ROOT / "examples" / "source.mp4")) as f:
        true = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    last = x + 7 * (TILE + GAP)
    assert np.array_equal(sheet[y:y + TILE, last:last + TILE][::3, ::3], true[-1])
    bars = done.stderr.replace("\r", "\n")
    assert "Loading pipeline components" not in bars and "Loading weights" not in bars, bars[-2000:]
    assert len(set(re.findall(r"(\d+)/2 \[", bars))) >= 1  # the denoising bar (2 steps) is there
    assert not re.search(r"\w*Warning\b", done.stderr), done.stderr[-2000:]


def test_demo_verbose_shows_the_library_bars(tmp_path):
    done = run_demo(tmp_path, "--verbose")
    assert done.returncode == 0, done.stderr
    assert "Loading pipeline components" in done.stderr


def test_results_sheet_tiles_are_the_frames_enlarged():
    """The sheet's tiles, read back at their places: first frame, trajectory over it, and frames 0 and
    T-1 each enlarged a whole number of times (nearest: each pixel a block of equal values)."""
    from magicmotion.io import overlay
    from magicmotion.sheet import GAP, LABEL_HEIGHT, ROW_LABEL_WIDTH, TILE, SheetRow, results_sheet, trajectory_overlay

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    frames = rng.integers(0, 255, (9, 32, 48, 3), dtype=np.uint8)
    maps = np.zeros_like(frames)
    maps[:, 4:10, 5:12] = (128, 0, 0)
    sheet = results_sheet([SheetRow("a", image, maps, frames), SheetRow("b", image, maps, frames[::-1])], columns=3)
    k = TILE // 48  # 4
    tile_h, tile_w = 32 * k, 48 * k

    def tile(row, col):
        y, x = LABEL_HEIGHT + row * (tile_h + GAP) + GAP, ROW_LABEL_WIDTH + col * (tile_w + GAP) + GAP
        return sheet[y:y + tile_h, x:x + tile_w][::k, ::k]

    assert np.array_equal(tile(0, 0), image)
    assert np.array_equal(tile(0, 1), trajectory_overlay(image, maps))
    assert not np.array_equal(tile(0, 1), image) and np.array_equal(tile(0, 1)[20:], image[20:])
    assert np.array_equal(tile(0, 2), frames[0]) and np.array_equal(tile(0, 4), frames[8])
    assert np.array_equal(tile(1, 2), frames[8]) and np.array_equal(tile(1, 4), frames[0])
    # the overlay of the last frame is the strongest: its blend of the last map at alpha 0.8
    assert np.array_equal(trajectory_overlay(image, maps[:1], count=1), overlay(image, maps[0], alpha=0.8))


def test_demo_measures_the_video_against_the_true_clip(tmp_path):
    """demo.json's frame-0 PSNR is the PSNR of the written video's first frame against source.mp4's,
    computed here with OpenCV from both files as PyAV decodes them; the line printed carries the three
    figures."""
    import json

    import av
    import cv2

    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "demo" / "demo.json").read_text())["box"]

    def frames(path):
        with av.open(str(path)) as f:
            return [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]

    true = frames(ROOT / "examples" / "source.mp4")
    # the pipeline's frames before encoding are not on disk: the written video is within its x264
    # quantisation (crf 18) of them, a fraction of a dB at these PSNRs
    written = frames(tmp_path / "demo" / "box.mp4")
    assert len(written) == len(true)
    assert abs(result["frame0_psnr"] - cv2.PSNR(written[0], true[0])) < 1.0
    assert abs(result["frame0_psnr"] - cv2.PSNR(written[0], true[-1])) > 1.0  # the wrong frame: 2.4 dB off
    assert 0 <= result["colour_error"] < 255 * 3 ** 0.5 and result["background_psnr"] > 5
    line = next(l for l in done.stdout.splitlines() if l.strip().startswith("box:"))
    assert f"frame 0 {result['frame0_psnr']:.1f} dB" in line and f"colour error {result['colour_error']:.1f}" in line
