"""What inputs may ask for, checked at each boundary before anything is allocated or decoded.

Every command reads numbers, sizes, images, videos and JSON through these checks, so a hostile or
mistaken input (a decompression bomb, a spec claiming 10^12 frames, JSON nested 100k deep, a box of
10^400, `--fps inf`) is one line and exit 2, never a MemoryError, a RecursionError or a crash.
docs/limits.md lists the limits and why.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from .errors import MagicMotionError, MediaError

MAX_SIDE = 8192  # pixels, the longer side of any image, frame, mask or spec
MAX_PIXELS = 8192 * 8192  # 64 Mpx per image / frame (PIL warns at 89 Mpx, a 20000x20000 PNG is 400)
MAX_FRAMES = 1024  # frames of a spec, a clip or a video read whole
MAX_VIDEO_PIXELS = 2**30  # frames x width x height of one video in memory (3 GiB as uint8 RGB)
MAX_OBJECTS = 255  # objects of a spec (a label PNG holds ids 1..255)
MAX_JSON_DEPTH = 64  # nesting of any JSON file we read (a spec is 5 deep)
MAX_JSON_BYTES = 256 * 1024 * 1024  # a JSON file larger than this is not one of ours
MAX_COORD = 1e7  # |box coordinate| in pixels, far beyond any MAX_SIDE image
SEED_RANGE = 2**32  # seeds are in [0, 2^32): numpy's and torch's generators take that
MAX_FPS = 240.0
MIN_IMAGE_SIDE = 16  # a first frame smaller than one latent token of any base is not a picture


def check_number(value, name: str, where: str = "", lo: float | None = None, hi: float | None = None,
                 error: type[MagicMotionError] = MagicMotionError) -> float:
    """A finite real number (not a bool) in [lo, hi] -> float; else `error` naming `where` and `name`."""
    prefix = f"{where}: " if where else ""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        try:
            value = float(value)
        except OverflowError:  # an int beyond float
            ok = False
    if not ok or not math.isfinite(value):
        raise error(f"{prefix}{name} must be a finite number, got {_short(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{prefix}{name} must be in {_bounds(lo, hi)}, got {_short(value)}")
    return value


def check_int(value, name: str, where: str = "", lo: int | None = None, hi: int | None = None,
              error: type[MagicMotionError] = MagicMotionError) -> int:
    """An integer (not a bool, not a float) in [lo, hi] -> int; else `error` naming `where`, `name`."""
    prefix = f"{where}: " if where else ""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise error(f"{prefix}{name} must be an integer, got {_short(value)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{prefix}{name} must be in {_bounds(lo, hi)}, got {_short(value)}")
    return value


def check_seed(value, name: str = "seed", where: str = "",
               error: type[MagicMotionError] = MagicMotionError) -> int:
    """A seed: an integer in [0, 2^32)."""
    return check_int(value, name, where, 0, SEED_RANGE - 1, error)


def check_size(width, height, where: str = "", error: type[MagicMotionError] = MagicMotionError,
               what: str = "size") -> tuple[int, int]:
    """(width, height) positive integers, each side at most MAX_SIDE and the area at most MAX_PIXELS."""
    prefix = f"{where}: " if where else ""
    w = check_int(width, f"{what} width", where, 1, None, error)
    h = check_int(height, f"{what} height", where, 1, None, error)
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise error(f"{prefix}{what} {_short(w)}x{_short(h)} is beyond the limit of {MAX_SIDE} pixels a side "
                    f"and {MAX_PIXELS} pixels in all (docs/limits.md)")
    return w, h


def check_video_size(width: int, height: int, frames: int, where: str = "",
                     error: type[MagicMotionError] = MagicMotionError) -> None:
    """A whole video (frames x width x height pixels) within MAX_VIDEO_PIXELS, before it is allocated."""
    check_size(width, height, where, error)
    check_frames(frames, where, "frames", error)
    if width * height * frames > MAX_VIDEO_PIXELS:
        prefix = f"{where}: " if where else ""
        raise error(f"{prefix}{frames} frames of {width}x{height} is beyond the limit of {MAX_VIDEO_PIXELS} "
                    "pixels per video (docs/limits.md)")


def check_frames(value, where: str = "", name: str = "frames",
                 error: type[MagicMotionError] = MagicMotionError) -> int:
    """A frame count in 1..MAX_FRAMES."""
    return check_int(value, name, where, 1, MAX_FRAMES, error)


def _bounds(lo, hi) -> str:
    if lo is None:
        return f"(-inf, {hi}]"
    if hi is None:
        return f"[{lo}, inf)"
    return f"{lo}..{hi}"


def _short(value) -> str:
    """repr, cut short (an integer of 400 digits is not printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**15:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_finite_weights(model, where, error: type[MagicMotionError] = MagicMotionError):
    """`model` (a torch module or a state dict) when every floating-point tensor is finite; else `error`
    naming `where` and the first tensor holding NaN or infinity (weights that would give a black or a
    noise video without a word). Returns `model`."""
    import torch

    tensors = model.items() if isinstance(model, dict) else model.state_dict().items()
    with torch.no_grad():
        for name, tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.device.type != "meta":
                if not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).sum())
                    raise error(f"{where}: tensor {name} holds {bad} NaN or infinite values of {tensor.numel()}; "
                                "the weights are broken")
    return model


# ---------------------------------------------------------------------------------------- JSON


_JSON_STRING = None


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text (brackets inside strings are not counted)."""
    global _JSON_STRING
    import re

    if _JSON_STRING is None:
        _JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
    bare = _JSON_STRING.sub("", text)
    if '"' not in bare:  # every string closed: count the brackets left, in C
        codes = np.frombuffer(bare.encode("utf-8", "surrogatepass"), np.uint8)
        depth = deepest = 0
        for start in range(0, len(codes), 1 << 24):  # 16 MB at a time: bounded memory
            chunk = codes[start:start + (1 << 24)]
            level = depth + np.cumsum(np.isin(chunk, (91, 123)).astype(np.int32) - np.isin(chunk, (93, 125)))
            deepest, depth = max(deepest, int(level.max(initial=depth))), int(level[-1])
        return deepest
    return _json_depth_slow(text)


def _json_depth_slow(text: str) -> int:
    """json_depth character by character (for text with an unclosed string)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_json(text: str, where: str, error: type[MagicMotionError] = MagicMotionError):
    """json.loads with a nesting limit (Python's json recurses: 100k levels is a RecursionError) and
    integers of at most 4300 digits; `error` naming `where` for anything malformed."""
    import json

    if json_depth(text) > MAX_JSON_DEPTH:
        raise error(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise error(f"{where}: malformed JSON ({_first_line(e)})") from None


def read_json(path: str | os.PathLike, error: type[MagicMotionError] = MagicMotionError, what: str = "JSON file"):
    """A JSON file read with `loads_json`'s limits; missing, unreadable (permissions), not UTF-8 or
    too large -> `error` naming the file."""
    path = Path(path)
    return loads_json(_read_text(path, error, what, "file not found"), str(path), error)


def _read_text(path: Path, error: type[MagicMotionError], what: str, missing: str) -> str:
    """A config file's text: missing, unreadable (permissions), larger than MAX_JSON_BYTES or not
    UTF-8 -> `error` naming the file."""
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path}: larger than {MAX_JSON_BYTES // 2**20} MiB, not a {what}")
        return path.read_text(encoding="utf-8")
    except PermissionError:
        raise error(f"{path}: cannot read the {what} (permission denied)") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (invalid UTF-8)") from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def read_yaml(path: str | os.PathLike, error: type[MagicMotionError] = MagicMotionError, what: str = "YAML file"):
    """A YAML file (yaml.safe_load) with `read_json`'s limits: missing, unreadable, not UTF-8, too
    large, nested deeper than MAX_JSON_DEPTH (YAML's parser recurses too) or malformed -> `error`
    naming the file, on one line (with the line and column where YAML says)."""
    import yaml

    path = Path(path)
    text = _read_text(path, error, what, f"{what} not found")
    if json_depth(text) > MAX_JSON_DEPTH:
        raise error(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels, not a {what}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or _first_line(e)
        raise error(f"{path}: {where}not valid YAML ({problem})") from None
    except RecursionError:
        raise error(f"{path}: nested too deep, not a {what}") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# ---------------------------------------------------------------------------------------- images and videos


def open_image(path: str | os.PathLike, error: type[MagicMotionError] = MediaError, what: str = "image"):
    """PIL.Image.open with the pixel limit checked from the header, before any pixel is decoded.

    Returns the open (lazy) image; the caller decodes it (`with open_image(p) as im: ...`) and
    handles PIL's own errors for files that are not images (UnidentifiedImageError, OSError)."""
    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():  # between 89 and 178 Mpx PIL warns; ours is the one message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise error(f"{path}: {what} beyond the limit of {MAX_PIXELS} pixels (docs/limits.md)") from None
    w, h = im.size
    if w < 1 or h < 1 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        im.close()
        raise error(f"{path}: {what} is {w}x{h}, beyond the limit of {MAX_SIDE} pixels a side and "
                    f"{MAX_PIXELS} pixels in all (docs/limits.md)")
    return im


def check_video_stream(path, stream, error: type[MagicMotionError] = MediaError) -> None:
    """A PyAV video stream's size from its header, before any frame is decoded."""
    w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise error(f"{path}: video is {w}x{h}, beyond the limit of {MAX_SIDE} pixels a side and "
                    f"{MAX_PIXELS} pixels in all (docs/limits.md)")
