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

    With `directory=True` the temporary path is a fresh folder (for PNG-frame folders, model folders)
    that replaces `path` whole. Raises MediaError when the output folder does not exist, or when
    `path` is a folder and a file is to be written there (or the other way round).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise MediaError(f"{path}: output folder {parent} does not exist")
    if not directory and path.is_dir():
        raise MediaError(f"{path}: is a folder, expected a file name")
    if directory and path.exists() and not path.is_dir():
        raise MediaError(f"{path}: is a file, expected a folder")
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as e:
        raise MediaError(f"{path}: cannot write in {parent} ({e.strerror or e})") from None
    # mkstemp/mkdtemp create private (0600/0700) entries: give the output the usual permissions
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if directory else 0o666) & ~umask)
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


def _check_frames(path, frames) -> np.ndarray:
    """Frames for writing: uint8 (T, H, W, 3) with T >= 1 (other dtypes are clipped to 0..255)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise MediaError(f"{path}: frames must be (T, H, W, 3) with T, H, W >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    return frames



def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file and folder under `folder` to disk (before renaming it into place)."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)

# ---------------------------------------------------------------------------------------- images


# What a person expects from an image file, whatever its mode: the first frame of an animation, EXIF
# orientation applied (as ImageOps.exif_transpose), 16-bit values brought to 8 bits (v / 257, as
# 65535 -> 255), CMYK and palette images in RGB, and transparent pixels composited over
# ALPHA_BACKGROUND (said once per file on stderr). Mask files read as object ids (`read_labels`).
# See docs/generate.md ("First frames").
ALPHA_BACKGROUND = (255, 255, 255)  # white, as a browser or an image viewer's page shows transparency
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")
_NOTED: set[str] = set()  # files whose transparency was already reported


def note_once(key: str, message: str) -> None:
    """Print `magicmotion: note: message` on stderr, once per process for `key`."""
    import sys

    if key not in _NOTED:
        _NOTED.add(key)
        print(f"magicmotion: note: {message}", file=sys.stderr)


def _heif_ready(path: Path, error, what: str) -> None:
    """A HEIC/HEIF file (by its ftyp brand): register pillow-heif's opener, or say to install it."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return
    if head[4:8] != b"ftyp" or head[8:12] not in HEIF_BRANDS or (head[8:12] == b"mif1" and b"avif" in head):
        return
    try:
        import pillow_heif
    except ImportError:
        raise error(f"{path}: a HEIC/HEIF {what}; install the pillow-heif package to read it "
                    "(pip install pillow-heif), or save it as PNG or JPEG") from None
    pillow_heif.register_heif_opener()


@contextlib.contextmanager
def opened_image(path: str | os.PathLike, error=MediaError, what: str = "image"):
    """Open an image file as a person expects to see it: size checked from the header (limits.py), the
    first frame of an animated GIF/WebP/APNG, EXIF orientation applied. Yields the PIL image; an
    unreadable file raises `error` naming the file."""
    from PIL import ImageOps, UnidentifiedImageError

    from .limits import open_image

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    _heif_ready(path, error, what)
    try:
        with open_image(path, error, what) as im:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            try:  # PNG's eXIf chunk may lie after the pixels: a truncated file fails when decoded, below
                orientation = im.getexif().get(0x0112, 1)
            except (OSError, SyntaxError, ValueError, EOFError):
                orientation = 1
            if orientation not in (0, 1):
                im = ImageOps.exif_transpose(im)
            yield im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise error(f"{path}: unreadable {what} ({e})") from None


def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 (round(v / 257): 65535 is white); values outside are clipped."""
    values = np.clip(values.astype(np.float64), 0, 65535)
    return np.floor(values / 257.0 + 0.5).astype(np.uint8)


def image_to_rgb(im, where: str = "image", background: tuple[int, int, int] = ALPHA_BACKGROUND) -> np.ndarray:
    """A PIL image of any mode -> uint8 (H, W, 3) RGB.

    I;16 (16-bit grey) and I (32-bit integer, read as 16-bit values): v / 257; F (float): 0..1 when
    its values lie there, else 0..255, clipped; 1, L, P, CMYK, YCbCr, LAB, HSV: Pillow's conversion;
    RGBA, LA, PA, premultiplied modes and palette/grey/RGB images with a transparent colour:
    composited over `background` (a one-line note on stderr, once per `where`)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        grey = _sixteen_to_eight(np.asarray(im).astype(np.int64))
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64))
        scale = 255.0 if values.size and values.min() >= 0 and values.max() <= 1 else 1.0
        grey = np.clip(np.floor(values * scale + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3:].astype(np.uint32)
        if (alpha < 255).any():
            bg = np.array(background, np.uint32)
            rgb = (rgba[..., :3].astype(np.uint32) * alpha + bg * (255 - alpha) + 127) // 255
            name = {(255, 255, 255): "white", (0, 0, 0): "black"}.get(tuple(background), str(tuple(background)))
            note_once(where, f"{where}: has transparent pixels; composited over {name} (docs/generate.md)")
            return rgb.astype(np.uint8)
        return np.ascontiguousarray(rgba[..., :3])
    return np.array(im.convert("RGB"))


def image_to_labels(im) -> np.ndarray:
    """A PIL image of a mask file -> its values: int64 (H, W) object ids for palette (the index),
    grey, 1-bit, 16-bit and 32-bit images (the value; LA/PA: transparent pixels 0), or uint8
    (H, W, 3) for colour images (RGB; RGBA with transparent pixels black), which the caller reads
    through its palette."""
    mode = im.mode
    if mode in ("P", "L", "1", "I", "PA", "LA") or mode.startswith("I;16"):
        if mode in ("PA", "LA"):
            arr = np.asarray(im)
            return np.where(arr[..., 1] > 0, arr[..., 0], 0).astype(np.int64)
        return np.asarray(im).astype(np.int64)
    if mode == "RGBA":
        arr = np.asarray(im)
        return np.where(arr[..., 3:] > 0, arr[..., :3], 0).astype(np.uint8)
    return np.array(im.convert("RGB"))


def read_image(path: str | os.PathLike, error=MediaError, what: str = "image",
               background: tuple[int, int, int] = ALPHA_BACKGROUND) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) RGB, as a person expects to see it (`opened_image`,
    `image_to_rgb`): 8/16-bit, grey, palette, CMYK, transparency over ALPHA_BACKGROUND, EXIF
    orientation, the first frame of an animation, HEIC with pillow-heif. Sizes beyond
    docs/limits.md are refused from the header, before decoding."""
    with opened_image(path, error, what) as im:
        return image_to_rgb(im, str(path), background)


def read_labels(path: str | os.PathLike, error=MediaError, what: str = "mask") -> np.ndarray:
    """A mask file -> object ids (`image_to_labels`): int64 (H, W), or uint8 (H, W, 3) colours."""
    with opened_image(path, error, what) as im:
        return image_to_labels(im)


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".webp": "WEBP"}


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """uint8 (H, W, 3) or (H, W) -> an image file; the format follows the suffix (PNG when it is
    not one of .png .jpg .jpeg .gif .webp)."""
    from PIL import Image

    path = Path(path)
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise MediaError(f"{path}: an image must be (H, W, 3) or (H, W), got {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=_pil_format(path))
    return path


def _pil_format(path: Path) -> str:
    return IMAGE_FORMATS.get(path.suffix.lower(), "PNG")


# ---------------------------------------------------------------------------------------- videos


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """A video file -> (uint8 (T, H, W, 3) RGB frames, fps). Reads a folder of PNG/JPG frames too
    (sorted by name, fps 8; transparent pixels over black, the background of trajectory maps). `max_frames`: read at most that many frames from the start (at most
    MAX_FRAMES in any case). Frame sizes beyond docs/limits.md are refused before decoding."""
    import av

    from .limits import MAX_FRAMES, check_video_stream

    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise MediaError(f"{path}: max_frames must be at least 1, got {max_frames}")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise MediaError(f"{path}: no frames (PNG/JPG) in folder")
        if len(files) > (max_frames or MAX_FRAMES):
            if not max_frames:
                raise MediaError(f"{path}: {len(files)} frames, beyond the limit of {MAX_FRAMES} (docs/limits.md)")
            files = files[:max_frames]
        frames = [read_image(p, background=(0, 0, 0)) for p in files]  # maps' background: black
        if any(f.shape != frames[0].shape for f in frames):
            bad = next(p for p, f in zip(files, frames) if f.shape != frames[0].shape)
            raise MediaError(f"{bad}: size differs from {files[0].name}")
        return np.stack(frames), 8.0
    if not path.is_file():
        raise MediaError(f"{path}: video not found")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            check_video_stream(path, stream)
            fps = float(stream.average_rate or stream.guessed_rate or 8.0)
            for frame in container.decode(stream):
                if not max_frames and len(frames) >= MAX_FRAMES:
                    raise MediaError(f"{path}: more than {MAX_FRAMES} frames, beyond the limit (docs/limits.md)")
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, MemoryError) as e:
        raise MediaError(f"{path}: unreadable video ({e})") from None
    if not frames:
        raise MediaError(f"{path}: video has no frames")
    return np.stack(frames), fps


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """uint8 (T, H, W, 3) -> H.264 mp4 (yuv420p; odd sizes are padded by one edge pixel)."""
    import av
    from fractions import Fraction

    path = Path(path)
    frames = _check_frames(path, frames)
    if not 0 < fps <= 1000:
        raise MediaError(f"{path}: fps must be positive (at most 1000), got {fps}")
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


FRAME_NAME = "{:05d}.png"


def write_frames(folder: str | os.PathLike, frames: np.ndarray) -> Path:
    """uint8 (T, H, W, 3) -> folder of PNGs 00000.png, 00001.png, ...

    A new folder is written whole under a temporary name, then renamed. Into an existing folder the
    PNGs are written to a temporary subfolder, then each is renamed into place; other files there
    are left alone, except frames NNNNN.png numbered T or more (from an earlier, longer video),
    which are removed."""
    from PIL import Image

    folder = Path(folder)
    frames = _check_frames(folder, frames)
    if not folder.is_dir():
        with atomic_path(folder, directory=True) as tmp:
            for i, f in enumerate(frames):
                Image.fromarray(f).save(tmp / FRAME_NAME.format(i))
        return folder
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".frames.", suffix=".tmp", dir=folder))
    except OSError as e:
        raise MediaError(f"{folder}: cannot write there ({e.strerror or e})") from None
    try:
        for i, f in enumerate(frames):
            Image.fromarray(f).save(tmp / FRAME_NAME.format(i))
        for i in range(len(frames)):
            os.replace(tmp / FRAME_NAME.format(i), folder / FRAME_NAME.format(i))
        for p in folder.glob("[0-9][0-9][0-9][0-9][0-9].png"):
            if int(p.stem) >= len(frames):
                p.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------------------------------- previews


def pyplot():
    """matplotlib.pyplot drawing off screen (the Agg backend): figures go to files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as a PNG at `path` (atomically), and close it, written or not."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def overlay(frames: np.ndarray, maps: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend trajectory maps over frames where the maps are not black:
    (1 - alpha) * frame + alpha * map there, the frame unchanged elsewhere. uint8, same shape."""
    frames = np.asarray(frames, dtype=np.float32)
    maps = np.asarray(maps)
    if frames.shape != maps.shape:
        raise MediaError(f"overlay: frames {frames.shape} and maps {maps.shape} differ in shape")
    drawn = maps.any(axis=-1, keepdims=True)
    out = np.where(drawn, (1 - alpha) * frames + alpha * maps.astype(np.float32), frames)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


SHEET_MIN_WIDTH = 1000  # a preview contact sheet of small frames is enlarged to about this width
SHEET_MAX_SIDE = 512  # ... but no frame beyond this side


def contact_sheet(frames: np.ndarray, columns: int = 8, max_frames: int = 16, min_width: int = 0,
                  max_side: int = SHEET_MAX_SIDE) -> np.ndarray:
    """Frames (evenly chosen, at most `max_frames`) tiled left to right, top to bottom. Small frames
    are enlarged a whole number of times (nearest neighbour: each pixel becomes a block) until the
    sheet is at least `min_width` wide, as long as a frame's longer side stays within `max_side`;
    frames that large already are kept as they are."""
    frames = np.asarray(frames, dtype=np.uint8)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    chosen = frames[idx]
    cols = min(columns, len(chosen))
    rows = -(-len(chosen) // cols)
    k = max(1, min(-(-min_width // (cols * chosen.shape[2])), max_side // max(chosen.shape[1:3])))
    if k > 1:
        chosen = chosen.repeat(k, axis=1).repeat(k, axis=2)
    _, h, w, c = chosen.shape
    sheet = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, f in enumerate(chosen):
        r, q = divmod(i, cols)
        sheet[r * h:(r + 1) * h, q * w:(q + 1) * w] = f
    return sheet


PREVIEW_SUFFIXES = (".gif", ".mp4", *IMAGE_FORMATS)


def write_preview(path: str | os.PathLike, frames: np.ndarray, maps: np.ndarray | None = None,
                  fps: float = 8.0, alpha: float = 0.6) -> Path:
    """The trajectory maps (T, H, W, 3) drawn over the frames (T, H, W, 3): an animated .gif, an .mp4
    video, or a contact sheet (.png, .jpg, .webp) of up to 16 frames, 8 to a row, small frames
    enlarged (nearest neighbour) to make it about SHEET_MIN_WIDTH pixels wide."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PREVIEW_SUFFIXES:
        raise MediaError(f"{path}: a preview is a {', '.join(PREVIEW_SUFFIXES)} file")
    frames = _check_frames(path, frames)
    shown = frames if maps is None else overlay(frames, maps, alpha)
    if suffix == ".mp4":
        return write_video(path, shown, fps=fps)
    if suffix == ".gif":
        if not fps > 0:
            raise MediaError(f"{path}: fps must be positive, got {fps}")
        images = [Image.fromarray(f) for f in shown]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(1, round(1000 / fps)), loop=0)
        return path
    return write_image(path, contact_sheet(shown, min_width=SHEET_MIN_WIDTH))
