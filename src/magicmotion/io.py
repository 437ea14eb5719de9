"""Image and video I/O: PyAV for video, Pillow for images; every write is atomic."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import MediaError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False):
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it.

    With `directory=True` the temporary path is a fresh folder (for PNG-frame folders, model folders).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MediaError(f"{path}: output folder {parent} does not exist")
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) RGB."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise MediaError(f"{path}: unreadable image ({e})") from None


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format=_pil_format(path))
    return path


def _pil_format(path: Path) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".webp": "WEBP"}.get(
        path.suffix.lower(), "PNG")


# ---------------------------------------------------------------------------------------- videos


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """A video file -> (uint8 (T, H, W, 3) RGB frames, fps). Reads a folder of PNG/JPG frames too."""
    import av

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise MediaError(f"{path}: no frames (PNG/JPG) in folder")
        files = files[:max_frames] if max_frames else files
        return np.stack([read_image(p) for p in files]), 8.0
    if not path.is_file():
        raise MediaError(f"{path}: video not found")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 8.0)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"{path}: unreadable video ({e})") from None
    if not frames:
        raise MediaError(f"{path}: video has no frames")
    return np.stack(frames), fps


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """uint8 (T, H, W, 3) -> H.264 mp4 (yuv420p; odd sizes are padded by one edge pixel)."""
    import av
    from fractions import Fraction

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise MediaError(f"{path}: frames must be (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    _, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = w + pad_w, h + pad_h
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
            container.mux(stream.encode())
    return path


def write_frames(folder: str | os.PathLike, frames: np.ndarray) -> Path:
    """uint8 (T, H, W, 3) -> folder of PNGs 00000.png, 00001.png, ... (written whole, then renamed)."""
    from PIL import Image

    folder = Path(folder)
    with atomic_path(folder, directory=True) as tmp:
        for i, f in enumerate(np.asarray(frames, dtype=np.uint8)):
            Image.fromarray(f).save(tmp / f"{i:05d}.png")
    return folder


# ---------------------------------------------------------------------------------------- previews


def overlay(frames: np.ndarray, maps: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend trajectory maps over frames where the maps are not black."""
    frames = np.asarray(frames, dtype=np.float32)
    maps = np.asarray(maps)
    if frames.shape != maps.shape:
        raise MediaError(f"overlay: frames {frames.shape} and maps {maps.shape} differ in shape")
    drawn = maps.any(axis=-1, keepdims=True)
    out = np.where(drawn, (1 - alpha) * frames + alpha * maps.astype(np.float32), frames)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def contact_sheet(frames: np.ndarray, columns: int = 8, max_frames: int = 16) -> np.ndarray:
    """Frames (evenly chosen, at most `max_frames`) tiled left to right, top to bottom."""
    frames = np.asarray(frames, dtype=np.uint8)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    chosen = frames[idx]
    cols = min(columns, len(chosen))
    rows = -(-len(chosen) // cols)
    _, h, w, c = chosen.shape
    sheet = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, f in enumerate(chosen):
        r, q = divmod(i, cols)
        sheet[r * h:(r + 1) * h, q * w:(q + 1) * w] = f
    return sheet


def write_preview(path: str | os.PathLike, frames: np.ndarray, maps: np.ndarray | None = None,
                  fps: float = 8.0, alpha: float = 0.6) -> Path:
    """The trajectory drawn over the frames: an animated .gif, or a contact-sheet .png."""
    from PIL import Image

    path = Path(path)
    shown = frames if maps is None else overlay(frames, maps, alpha)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in shown]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=int(1000 / fps), loop=0)
        return path
    return write_image(path, contact_sheet(shown))
