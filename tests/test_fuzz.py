"""A fuzzer of our own: hypothesis draws specs, configs, CSVs, images (modes, sizes, formats, truncations),
arrays and option values, runs every command in this process on them (`magicmotion.cli.main`), and
checks the properties every command promises (docs/limits.md, "What the fuzzer checks"):

1. the exit code is 0 or 2: never 1 (an internal error) nor an uncaught exception or signal;
2. a refusal is one line: exactly one `magicmotion: error:` line, the last, and no traceback;
3. nothing is written outside the command's outputs (every file in the work folder is hashed before
   and after: new, changed or removed files may only be the outputs);
4. no input is modified (the inputs are in that work folder: their hashes must not change);
5. a refused command leaves no partial output: no output that was not there before, no temporary file.

Two profiles: `short` (the default, in CI: a few examples per command, the whole file under 2 minutes)
and `long` (`make fuzz`: MAGICMOTION_FUZZ=long, hundreds per command). A finding becomes a row of
tests/test_hostile.py. Each example runs in a fresh temporary folder (hypothesis reruns examples, so no
function-scoped fixture is used).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from magicmotion.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "src" / "magicmotion" / "assets" / "tiny"
PROFILE = os.environ.get("MAGICMOTION_FUZZ", "short")
# examples per command: short keeps the file under 2 minutes here (2 shared cores); long is `make fuzz`
EXAMPLES = {"short": 6, "long": int(os.environ.get("MAGICMOTION_FUZZ_EXAMPLES", "300"))}[PROFILE]
settings.register_profile("fuzz-short", max_examples=EXAMPLES, deadline=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), database=None)
settings.register_profile("fuzz-long", max_examples=EXAMPLES, deadline=None,
                          suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile(f"fuzz-{PROFILE}")
# expensive commands (a model runs when the input is valid) get a third of the examples
FUZZ_SLOW = settings(FUZZ, max_examples=max(2, EXAMPLES // 3))
COUNTS: dict[str, int] = {}

# ---------------------------------------------------------------------------------------- the properties


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (or the target of every symbolic link) under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run(name: str, argv: list[str], work: Path, outputs: list[Path], report_on_refusal: str | None = None
        ) -> tuple[int, str]:
    """Run `magicmotion argv` and check the five properties; `outputs` are the paths the command may
    write (files or folders, relative paths under work). `report_on_refusal`: a refusal whose message
    says this leaves the command's report in its output on purpose (`data filter` when no clip
    passes: the report says why). Returns (exit code, stderr)."""
    argv = [str(a) for a in argv]
    note(f"magicmotion {' '.join(argv)}")
    before = snapshot(work)
    existed = {o: o.exists() for o in outputs}
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    err = err.getvalue()
    note(err[-2000:])
    COUNTS[name] = COUNTS.get(name, 0) + 1
    assert code in (0, 2), f"exit {code}: {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("magicmotion: error:")]
    if code == 2:
        assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0].rstrip(), err[-3000:]
    after = snapshot(work)
    allowed = [str(o.relative_to(work)) for o in outputs]

    def may_change(rel: str) -> bool:
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed)

    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    outside = [p for p in changed if not may_change(p)]
    assert not outside, f"exit {code}: changed or written outside the outputs: {outside[:5]}; {err[-500:]}"
    if code == 2 and not (report_on_refusal and report_on_refusal in err):
        left = [o for o in outputs if o.exists() and not existed[o]]
        assert not left, f"a refused command left {left}: {err[-500:]}"
        assert set(after) == set(before), f"a refused command left files: {sorted(set(after) - set(before))[:5]}"
    # temporary files and output locks (`.NAME.lock`; a dataset's own `.lock` stays by design)
    temp = [p for p in after if ".tmp" in Path(p).name or (Path(p).name.endswith(".lock") and Path(p).name != ".lock")]
    assert not temp, f"temporary files left: {temp[:5]}"
    return code, err


@pytest.fixture(scope="module", autouse=True)
def counted():
    yield
    line = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
    path = os.environ.get("MAGICMOTION_FUZZ_LOG")
    if path:  # `make fuzz` keeps the counts for docs/limits.md
        with open(path, "a") as f:
            f.write(json.dumps({"profile": PROFILE, "counts": COUNTS, "total": sum(COUNTS.values())}) + "\n")
    print(f"\nfuzz ({PROFILE}): {sum(COUNTS.values())} commands run: {line}")


@contextlib.contextmanager
def workdir():
    with tempfile.TemporaryDirectory(prefix="mm-fuzz-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A 2-clip synthetic dataset (copied into each example's folder, as an input)."""
    from magicmotion.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("fuzz") / "data"
    synthesize(root, clips=2, frames=9, size=(32, 32), seed=0, test_fraction=0.0, progress=False)
    return root


# ---------------------------------------------------------------------------------------- strategies

# numbers as a careless user or an attacker types them
HOSTILE_TEXT = ["nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "-0", "1e9", str(10**12), str(2**64), "",
                "x", "1,2", "0x10", " 3 ", "1_000", "٣", "²", "1e-400", "--1"]
SIZES = ["32x32", "64x64", "48x32", "0x0", "1x1", "40000x40000", "8192x1", "x", "64", "-64x64", "64x64x3",
         "1e3x10", "16x16"]


def option(valid):
    """An option's text: one of `valid` (a strategy) or a hostile one."""
    return st.one_of(valid.map(str), st.sampled_from(HOSTILE_TEXT))


def numbers():
    """A JSON/YAML number as a file may hold one (floats include NaN and infinities)."""
    return st.one_of(st.integers(-10**6, 10**6), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 10**400, 1e308]))


def json_values(leaf=None):
    leaf = leaf or st.one_of(st.none(), st.booleans(), numbers(), st.text(max_size=8))
    return st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c,
                                                                                           max_size=3)),
                        max_leaves=6)


def dumps(value) -> str:
    """JSON text as Python writes it (NaN and Infinity literals included, as a hand-edited file may)."""
    try:
        return json.dumps(value)
    except (ValueError, OverflowError):
        return "null"


@st.composite
def box(draw, w=64, h=64):
    if draw(st.booleans()):
        x0, y0 = draw(st.integers(0, w - 2)), draw(st.integers(0, h - 2))
        return [x0, y0, draw(st.integers(x0 + 1, w)), draw(st.integers(y0 + 1, h))]
    return draw(st.one_of(st.lists(numbers(), min_size=0, max_size=5), json_values()))


@st.composite
def spec(draw, masks_allowed=True):
    """A trajectory spec as JSON text: mostly well formed with hostile values in places, sometimes a
    broken or truncated text. Mask paths may name files beside it, outside it or nowhere."""
    w = draw(st.sampled_from([64, 64, 32, 0, -1, 1, 8193, 10**12, 1.5, "64"]))
    h = draw(st.sampled_from([64, 64, 48, 0, 8193, None]))
    frames = draw(st.sampled_from([9, 17, 9, 1, 0, 2, 1025, 10**9, -3, 9.0]))
    objects = []
    for i in range(draw(st.integers(0, 3))):
        oid = draw(st.sampled_from([i + 1, i + 1, 0, -1, 256, 255 + i + 1, 22, 2**63, "1", True, 1.0]))
        keys = draw(st.lists(st.sampled_from(["0", "0", "4", "8", "-1", "1e3", "²", "99", " 1", "00"]), max_size=3,
                             unique=True))
        obj = {"id": oid, "boxes": {k: draw(box()) for k in keys}}
        if masks_allowed and draw(st.booleans()):
            obj["masks"] = {"0": draw(st.one_of(
                st.sampled_from(["m.png", "../m.png", "/etc/passwd", "nope.png", "m.png/", "", "link.png"]),
                st.fixed_dictionaries({"size": st.sampled_from([[64, 64], [48, 64], [0, 1], [10**6, 10**6], "x"]),
                                       "counts": st.one_of(st.lists(st.integers(-1, 5000), max_size=4),
                                                           st.text(max_size=6))})))}
        objects.append(obj)
    data = {"version": draw(st.sampled_from([1, 1, 2, None])), "width": w, "height": h, "num_frames": frames,
            "objects": objects}
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.text(max_size=4))] = draw(json_values())
    text = dumps(data)
    cut = draw(st.integers(0, 12))
    if cut == 0:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    elif cut == 1:
        text = draw(st.sampled_from(["", "[]", "null", "{", "[" * 200 + "]" * 200, '{"version": 1}', "\ufeff{}"]))
    return text


IMAGE_MODES = ["RGB", "RGB", "L", "P", "RGBA", "LA", "1", "I;16", "I", "F", "CMYK", "YCbCr", "PA"]
IMAGE_FORMATS = [".png", ".png", ".jpg", ".gif", ".webp", ".bmp", ".tiff"]


@st.composite
def image_bytes(draw, sizes=((64, 64), (64, 64), (32, 32), (1, 1), (15, 15), (16, 16), (64, 48), (200, 50), (3, 300))):
    """(suffix, bytes): an image in one of Pillow's modes and formats, at a small size, with palette /
    label content, sometimes truncated or not an image at all, or a header claiming a huge size."""
    from PIL import Image

    kind = draw(st.integers(0, 15))
    suffix = draw(st.sampled_from(IMAGE_FORMATS))
    if kind == 0:
        return ".png", draw(st.binary(max_size=64))
    if kind == 1:
        from shared_helpers import png_header

        with workdir() as d:
            return ".png", png_header(d / "h.png", draw(st.sampled_from([20000, 9000, 1])),
                                      draw(st.sampled_from([20000, 8193, 0]))).read_bytes()
    w, h = draw(st.sampled_from(sizes))
    mode = draw(st.sampled_from(IMAGE_MODES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    labels = np.zeros((h, w), np.uint8)
    for k in range(1, draw(st.integers(0, 3)) + 1):
        x0, y0 = rng.integers(0, max(1, w - 4)), rng.integers(0, max(1, h - 4))
        labels[y0:y0 + rng.integers(1, 20), x0:x0 + rng.integers(1, 20)] = draw(st.sampled_from([k, k, 255, 128]))
    im = Image.fromarray(labels, "P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [64] * (768 - 12))
    try:
        im = im.convert(mode) if mode not in ("P",) else im
    except (ValueError, OSError):
        im = im.convert("RGB")
    buf = io.BytesIO()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".gif": "GIF", ".webp": "WEBP", ".bmp": "BMP", ".tiff": "TIFF"}[suffix]
    try:
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        suffix = ".png"
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG")
    data = buf.getvalue()
    if kind == 2:
        data = data[: draw(st.integers(0, len(data)))]
    return suffix, data


def write_spec_dir(d: Path, text: str, mask: tuple[str, bytes] | None) -> Path:
    (d / "s.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    if mask is not None:
        (d / "m.png").write_bytes(mask[1])
    (d / "link.png").symlink_to("/etc/hostname")
    return d / "s.json"


# ---------------------------------------------------------------------------------------- trajectory


@FUZZ
@given(text=spec(), mask=st.one_of(st.none(), image_bytes()), kind=st.sampled_from([None, "mask", "box",
                                                                                     "sparse_box", "boxes"]),
       out=st.sampled_from(["maps.mp4", "maps.gif", "frames/", "maps.png", "s.json", "m.png", "./", "sub/x.mp4"]),
       opts=st.lists(st.sampled_from(["--size", "--keys", "--seed", "--fps", "--palette"]), max_size=2, unique=True),
       values=st.data())
def test_fuzz_trajectory_render(text, mask, kind, out, opts, values):
    with workdir() as d:
        s = write_spec_dir(d, text, mask)
        argv = ["trajectory", "render", s, "--out", str(d / out) + ("/" if out.endswith("/") else "")]
        if kind:
            argv += ["--kind", kind]
        for o in opts:
            valid = {"--size": st.sampled_from(SIZES), "--keys": st.integers(-2, 12), "--seed": st.integers(-1, 2**33),
                     "--fps": st.floats(0, 300), "--palette": st.sampled_from(["voc", "release", "x"])}[o]
            argv += [o, values.draw(option(valid))]
        run("trajectory render", argv, d, [d / out.rstrip("/")])


@FUZZ
@given(text=spec(), image=image_bytes(), out=st.sampled_from(["p.png", "p.gif", "p.mp4", "p.jpg", "s.json", "img"]),
       alpha=st.one_of(st.none(), option(st.floats(-1, 2))), size=st.one_of(st.none(), st.sampled_from(SIZES)))
def test_fuzz_trajectory_preview(text, image, out, alpha, size):
    with workdir() as d:
        s = write_spec_dir(d, text, None)
        img = d / f"img{image[0]}"
        img.write_bytes(image[1])
        target = img if out == "img" else d / out
        argv = ["trajectory", "preview", s, "--image", img, "--out", target]
        argv += ["--alpha", alpha] if alpha is not None else []
        argv += ["--size", size] if size is not None else []
        run("trajectory preview", argv, d, [target])


@FUZZ
@given(files=st.lists(st.tuples(st.sampled_from(["00000", "00001", "00004", "99999", "frame_3", "x", "-1", "1e3",
                                                 "00002.png", "٣"]), image_bytes()), min_size=0, max_size=4),
       num_frames=st.one_of(st.none(), option(st.integers(-1, 2000))))
def test_fuzz_trajectory_from_masks(files, num_frames):
    with workdir() as d:
        (d / "ann").mkdir()
        for name, (suffix, data) in files:
            (d / "ann" / f"{name}.png").write_bytes(data)
        argv = ["trajectory", "from-masks", d / "ann", "--out", d / "s.json"]
        argv += ["--num-frames", num_frames] if num_frames is not None else []
        run("trajectory from-masks", argv, d, [d / "s.json"])


@FUZZ
@given(frames=st.lists(image_bytes(sizes=((32, 32), (32, 32), (16, 32), (64, 64))), min_size=0, max_size=3),
       as_video=st.sampled_from(["no", "h264", "truncated"]), kind=st.sampled_from([None, "mask", "box", "sparse_box"]),
       palette=st.sampled_from([None, "voc", "release"]))
def test_fuzz_trajectory_from_maps(frames, as_video, kind, palette):
    with workdir() as d:
        if as_video == "no":
            (d / "maps").mkdir()
            for i, (suffix, data) in enumerate(frames):
                (d / "maps" / f"{i:05d}{suffix}").write_bytes(data)
            maps = d / "maps"
        else:
            from magicmotion.io import write_video
            from magicmotion.trajectory import load, render

            source = REPO / "examples" / ("trajectory-mask.json" if kind == "mask" else "trajectory.json")
            video = render(load(source), kind or "box", palette=palette or "voc")
            maps = write_video(d / "maps.mp4", video)
            if as_video == "truncated":
                maps.write_bytes(maps.read_bytes()[: len(frames) * 700 + 50])
        argv = ["trajectory", "from-maps", maps, "--out", d / "s.json"]
        argv += ["--kind", kind] if kind else []
        argv += ["--palette", palette] if palette else []
        run("trajectory from-maps", argv, d, [d / "s.json"])


DTYPES = ["float64", "float32", "int64", "uint8", "bool", "float16", "complex64", "U3", "object"]


@st.composite
def tracks_file(draw, d: Path) -> Path:
    kind = draw(st.sampled_from(["npy", "npz", "json", "zero", "bytes"]))
    shape = draw(st.sampled_from([(9, 3, 2), (1, 9, 3, 2), (9, 3), (0, 3, 2), (9, 0, 2), (2,), (), (9, 3, 3)]))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(st.sampled_from([30.0, np.nan, np.inf, -1e9, 1e300, 0.0]))
    if dtype == "object":
        arr = np.array([{"a": 1}] * max(1, int(np.prod(shape))), dtype=object)
    elif dtype == "U3":
        arr = np.full(shape, "abc")
    else:
        with np.errstate(all="ignore"):
            arr = (np.full(shape, fill) + np.arange(int(np.prod(shape)) or 1)[: int(np.prod(shape))].reshape(shape)
                   if shape else np.asarray(fill)).astype(dtype)
    if kind == "npy":
        path = d / "t.npy"
        np.save(path, arr, allow_pickle=dtype == "object")
    elif kind == "npz":
        path = d / "t.npz"
        extra = {"visibility": np.ones(shape[:-1] if len(shape) > 1 else (1,), dtype=draw(st.sampled_from(DTYPES[:5])))}
        np.savez(path, **{draw(st.sampled_from(["tracks", "pred_tracks", "x"])): arr}, **extra,
                 **({"ids": np.asarray(draw(st.lists(st.integers(-1, 300), max_size=4)))}
                    if draw(st.booleans()) else {}))
    elif kind == "json":
        path = d / "t.json"
        track = draw(st.lists(st.one_of(st.none(), st.lists(numbers(), min_size=2, max_size=3)), min_size=0,
                              max_size=9))
        obj = {"id": draw(st.sampled_from([1, 0, 256, "a"])), "tracks": [track, track],
               "mask": draw(st.sampled_from([None, "../m.png", "/etc/passwd", "m.png"]))}
        data = {"width": draw(st.sampled_from([64, 0, 10**9, -1])), "height": 64, "objects": [obj]}
        text = dumps(data)
        path.write_text(text[: draw(st.integers(0, len(text)))] if draw(st.integers(0, 6)) == 0 else text)
    elif kind == "zero":
        path = d / "t.npy"
        path.write_bytes(b"")
    else:
        path = d / "t.npz"
        path.write_bytes(draw(st.binary(max_size=300)))
    return path


@FUZZ
@given(data=st.data(), frame_size=st.one_of(st.none(), st.sampled_from(SIZES)),
       min_size=st.one_of(st.none(), option(st.floats(0, 1e10))),
       padding=st.one_of(st.none(), option(st.floats(-1, 20))),
       mask=st.one_of(st.none(), image_bytes()))
def test_fuzz_trajectory_from_points(data, frame_size, min_size, padding, mask):
    with workdir() as d:
        tracks = data.draw(tracks_file(d))
        argv = ["trajectory", "from-points", tracks, "--out", d / "o.json"]
        argv += ["--frame-size", frame_size] if frame_size else []
        argv += ["--min-size", min_size] if min_size is not None else []
        argv += ["--padding", padding] if padding is not None else []
        if mask is not None and tracks.suffix != ".json":
            (d / "m.png").write_bytes(mask[1])
            argv += ["--mask", d / "m.png"]
        run("trajectory from-points", argv, d, [d / "o.json"])


# ---------------------------------------------------------------------------------------- data


def copy_dataset(src: Path, d: Path) -> Path:
    shutil.copytree(src, d / "data")
    return d / "data"


DAMAGE = ["none", "zero video", "truncated video", "text video", "video symlinked out", "dangling video", "no video",
          "index field", "index line", "annotation field", "annotation text", "annotation symlinked out"]


def damage(root: Path, how: str, value, text: str) -> None:
    video = sorted((root / "videos").glob("*.mp4"))[0]
    ann = sorted((root / "annotations").glob("*.json"))[0]
    if how == "zero video":
        video.write_bytes(b"")
    elif how == "truncated video":
        video.write_bytes(video.read_bytes()[: len(text) * 37])
    elif how == "text video":
        video.write_text(text)
    elif how == "video symlinked out":
        video.unlink()
        video.symlink_to("/etc/hostname")
    elif how == "dangling video":
        video.unlink()
        video.symlink_to("/nonexistent/x.mp4")
    elif how == "no video":
        video.unlink()
    elif how == "annotation symlinked out":
        ann.unlink()
        ann.symlink_to("/etc/hostname")
    elif how in ("index field", "index line"):
        lines = (root / "index.jsonl").read_text().splitlines()
        if how == "index line":
            lines[0] = text
        else:
            record = json.loads(lines[0])
            record[sorted(record)[len(text) % len(record)]] = value
            lines[0] = dumps(record)
        (root / "index.jsonl").write_text("\n".join(lines) + "\n")
    elif how in ("annotation field", "annotation text"):
        if how == "annotation text":
            ann.write_text(text)
        else:
            spec_ = json.loads(ann.read_text())
            obj = spec_["objects"][0]
            key = sorted(obj["boxes"])[0]
            obj["boxes"][key][len(text) % 4] = value
            ann.write_text(dumps(spec_))


@FUZZ
@given(how=st.sampled_from(DAMAGE), value=json_values(), text=st.text(max_size=30),
       plot=st.sampled_from([None, "info.png", "data/index.jsonl", "data/x.png", "data/videos/", "data"]),
       flags=st.lists(st.sampled_from(["--json", "--no-check", "--verify"]), unique=True, max_size=2))
def test_fuzz_data_info(dataset, how, value, text, plot, flags):
    with workdir() as d:
        root = copy_dataset(dataset, d)
        damage(root, how, value, text)
        target = root / "info.png" if plot is None else d / plot
        argv = ["data", "info", root, *flags] + (["--plot", target] if plot else [])
        run("data info", argv, d, [target])


@FUZZ
@given(config=st.dictionaries(st.sampled_from(["motion", "object_motion", "object_area", "num_objects",
                                               "track_quality", "duration", "other"]),
                              st.one_of(st.none(), st.dictionaries(
                                  st.sampled_from(["enabled", "min", "max", "max_shake", "size", "max_pairs",
                                                   "max_lost", "min_frames", "min_seconds", "max_seconds", "x"]),
                                  st.one_of(numbers(), st.booleans(), st.none(), st.text(max_size=3)), max_size=3)),
                              max_size=3),
       raw=st.sampled_from([None, None, None, ".nan", "[", "a: [" * 70, "- 1\n- 2", "\x00"]),
       how=st.sampled_from(["none", "none", "zero video", "index field"]), value=json_values(),
       out=st.sampled_from(["kept", "data/kept", "data", "kept/x/y"]))
def test_fuzz_data_filter(dataset, config, raw, how, value, out):
    import yaml

    with workdir() as d:
        root = copy_dataset(dataset, d)
        damage(root, how, value, "x")
        cfg = d / "f.yaml"
        try:
            cfg.write_text(raw if raw is not None else yaml.safe_dump(config))
        except (yaml.YAMLError, ValueError):
            cfg.write_text("{}")
        argv = ["data", "filter", root, "--out", d / out, "--config", cfg, "--quiet"]
        # the filter's job: scores saved in the source index (under its lock)
        run("data filter", argv, d, [d / out, root / "index.jsonl", root / ".lock"],
            report_on_refusal="holds only the report")


@FUZZ
@given(header=st.sampled_from(["video_id,caption", "id,text", "a,b", "", "video_id", "video_id,caption,video_id",
                               "\ufeffvideo_id,caption"]),
       rows=st.lists(st.tuples(st.sampled_from(["v1", "v1.mp4", "videos/v1.mp4", "../outside", "../outside.mp4",
                                                "/etc/passwd", "", ".", "..", "a/../../v1", "v 1", "v1\x00",
                                                "masks/v1", "x" * 300, "v1/"]),
                               st.text(max_size=10)), max_size=3),
       layout=st.sampled_from(["good", "no maps", "linked out", "maps not images"]),
       out=st.sampled_from(["imp", "md/imp", "md", "outside.mp4"]),
       opts=st.lists(st.tuples(st.sampled_from(["--limit", "--test-fraction", "--workers"]),
                               option(st.integers(-2, 5))), max_size=2))
def test_fuzz_data_import_magicdata(header, rows, layout, out, opts):
    import csv

    with workdir() as d:
        md = d / "md"
        (md / "videos").mkdir(parents=True)
        shutil.copy(REPO / "examples" / "source.mp4", d / "outside.mp4")
        if layout == "linked out":
            (md / "videos" / "v1.mp4").symlink_to(d / "outside.mp4")
        else:
            shutil.copy(REPO / "examples" / "source.mp4", md / "videos" / "v1.mp4")
        if layout != "no maps":
            for sub in ("masks", "boxs"):
                (md / sub / "v1").mkdir(parents=True)
                frame = REPO / "examples" / "first_frame.png"
                (md / sub / "v1" / "annotated_frame_00000.png").write_bytes(
                    b"not an image" if layout == "maps not images" else frame.read_bytes())
        with open(md / "MagicData.csv", "w", newline="") as f:
            f.write(header + "\n")
            w = csv.writer(f)
            for r in rows:
                w.writerow([v.replace("\x00", "") for v in r])
        argv = ["data", "import-magicdata", md, "--out", d / out, "--quiet"]
        for flag, value in opts:
            argv += [flag, value]
        run("data import-magicdata", argv, d, [d / out])


@FUZZ
@given(opts=st.lists(st.tuples(st.sampled_from(["--clips", "--frames", "--size", "--seed", "--fps", "--max-objects",
                                                "--test-fraction", "--pan-prob"]),
                               st.data()), max_size=3, unique_by=lambda x: x[0]),
       out=st.sampled_from(["syn", "syn/a", "f"]))
def test_fuzz_data_synth(opts, out):
    small = {"--clips": st.integers(-1, 2), "--frames": st.integers(-1, 9), "--size": st.sampled_from(SIZES),
             "--seed": st.integers(-1, 2**33), "--fps": st.floats(-1, 300), "--max-objects": st.integers(-1, 6),
             "--test-fraction": st.floats(-0.5, 1.5), "--pan-prob": st.floats(-0.5, 1.5)}
    big = {"--clips": 2, "--frames": 9}  # valid values beyond these take long, not more cover
    with workdir() as d:
        (d / "f").write_text("a file")
        argv = ["data", "synth", "--out", d / out, "--clips", "1", "--frames", "5", "--size", "16x16"]
        for flag, data in opts:
            value = data.draw(option(small[flag]))
            digits = value.strip().isascii() and value.strip().isdigit()
            assume(not (flag in big and digits and int(value) > big[flag]))
            assume(not (flag == "--size" and value in ("64x64", "48x32")))
            argv += [flag, value]
        run("data synth", argv, d, [d / out])


# ---------------------------------------------------------------------------------------- bench, plan


@FUZZ
@given(how=st.sampled_from(DAMAGE), value=json_values(), text=st.text(max_size=20),
       frames=option(st.integers(-1, 12)), per_bucket=option(st.integers(-1, 3)),
       out=st.sampled_from(["bench", "data/bench", "data"]))
def test_fuzz_bench_build(dataset, how, value, text, frames, per_bucket, out):
    with workdir() as d:
        root = copy_dataset(dataset, d)
        damage(root, how, value, text)
        argv = ["bench", "build", root, "--out", d / out, "--frames", frames, "--per-bucket", per_bucket]
        run("bench build", argv, d, [d / out])


@FUZZ
@given(opts=st.lists(st.tuples(st.sampled_from(["--size", "--frames", "--batch", "--controlnet-layers", "--gpus"]),
                               st.data()), max_size=3, unique_by=lambda x: x[0]))
def test_fuzz_plan(opts):
    valid = {"--size": st.sampled_from(SIZES), "--frames": st.integers(-1, 100), "--batch": st.integers(-1, 8),
             "--controlnet-layers": st.integers(-1, 10**9), "--gpus": st.integers(-1, 64)}
    with workdir() as d:
        argv = ["plan", "--base", TINY / "base"]
        for flag, data in opts:
            argv += [flag, data.draw(option(valid[flag]))]
        run("plan", argv, d, [])


@FUZZ
@given(seqs=st.lists(st.tuples(st.sampled_from(["bear", "dog", "..", "a b", "x" * 80]),
                               st.lists(image_bytes(sizes=((32, 32), (32, 32), (48, 32))), min_size=0, max_size=2),
                               st.lists(image_bytes(sizes=((32, 32), (32, 32), (16, 16))), min_size=0, max_size=2)),
                     max_size=2, unique_by=lambda x: x[0]),
       frames=st.one_of(st.none(), option(st.integers(-1, 5))), fps=st.one_of(st.none(), option(st.floats(-1, 300))),
       captions=st.one_of(st.none(), st.text(max_size=30), json_values().map(dumps)),
       out=st.sampled_from(["bench", "davis/bench", "davis"]))
def test_fuzz_bench_davis(seqs, frames, fps, captions, out):
    with workdir() as d:
        for name, jpegs, labels in seqs:
            if name == "..":
                continue
            for i, (suffix, data) in enumerate(jpegs):
                (d / "davis" / "JPEGImages" / "480p" / name).mkdir(parents=True, exist_ok=True)
                (d / "davis" / "JPEGImages" / "480p" / name / f"{i:05d}.jpg").write_bytes(data)
            for i, (suffix, data) in enumerate(labels):
                (d / "davis" / "Annotations" / "480p" / name).mkdir(parents=True, exist_ok=True)
                (d / "davis" / "Annotations" / "480p" / name / f"{i:05d}.png").write_bytes(data)
        (d / "davis").mkdir(exist_ok=True)
        argv = ["bench", "davis", d / "davis", "--out", d / out]
        argv += ["--frames", frames] if frames is not None else []
        argv += ["--fps", fps] if fps is not None else []
        if captions is not None:
            (d / "captions.json").write_text(captions)
            argv += ["--captions", d / "captions.json"]
        run("bench davis", argv, d, [d / out])


@FUZZ
@given(scores=st.lists(st.one_of(json_values(), st.fixed_dictionaries(
    {"run": st.one_of(json_values(), st.fixed_dictionaries({"label": json_values(), "bench": json_values(),
                                                            "settings": json_values()})),
     "segmenter": st.one_of(json_values(), st.fixed_dictionaries({"name": json_values()})),
     "overall": json_values(), "buckets": st.one_of(json_values(), st.dictionaries(
         st.sampled_from(["1", "2", "5+", "x"]), st.one_of(json_values(), st.fixed_dictionaries(
             {"clips": numbers(), "fid": numbers(), "fvd": numbers(), "mask_iou": numbers(),
              "box_iou": numbers()}))))})),
    min_size=1, max_size=2),
    labels=st.one_of(st.none(), st.text(max_size=10)), out=st.sampled_from(["rep", "r0/rep", "r0"]))
def test_fuzz_bench_report(scores, labels, out):
    with workdir() as d:
        runs = []
        for i, score in enumerate(scores):
            (d / f"r{i}").mkdir()
            (d / f"r{i}" / "scores.json").write_text(dumps(score))
            runs.append(d / f"r{i}")
        argv = ["bench", "report", *runs, "--out", d / out] + (["--labels", labels] if labels is not None else [])
        run("bench report", argv, d, [d / out])


@FUZZ
@given(header=st.sampled_from(["video,caption", "video,caption,objects", "a,b", "", "video"]),
       rows=st.lists(st.tuples(st.sampled_from(["v.mp4", "../v.mp4", "/etc/hostname", "", "nope.mp4", "v.mp4/",
                                                "text.mp4"]), st.text(max_size=8), st.text(max_size=8)), max_size=2),
       opts=st.lists(st.tuples(st.sampled_from(["--clip-frames", "--frame-step", "--scene-threshold", "--size",
                                                "--max-objects", "--box-threshold", "--test-fraction", "--actors"]),
                               option(st.integers(-1, 40))), max_size=2),
       out=st.sampled_from(["cur", "v.mp4", "cur/x"]))
def test_fuzz_data_curate(header, rows, opts, out):
    import csv

    with workdir() as d:
        shutil.copy(REPO / "examples" / "source.mp4", d / "v.mp4")
        (d / "text.mp4").write_text("not a video")
        with open(d / "in.csv", "w", newline="") as f:
            f.write(header + "\n")
            csv.writer(f).writerows(rows)
        missing = d / "no-model"  # models are refused where they would load: nothing downloads
        argv = ["data", "curate", d / "in.csv", "--out", d / out, "--quiet", "--objects-from",
                "given", "--grounding", missing, "--sam2", missing, "--llm", missing, "--device", "cpu"]
        for flag, value in opts:
            argv += [flag, value]
        run("data curate", argv, d, [d / out])


@FUZZ
@given(video=st.sampled_from(["source", "truncated", "text", "frames"]), frames=st.lists(image_bytes(), max_size=2),
       points=st.lists(st.sampled_from(["10,10", "10,10,0", "1e9,1", "nan,nan", "x", "10,10,99", "-5,3", ""]),
                       max_size=2),
       boxes=st.lists(st.sampled_from(["1,1,20,20", "20,20,1,1", "nan,0,1,1", "0,0,1e9,1e9", "1,2,3"]), max_size=2),
       opts=st.lists(st.tuples(st.sampled_from(["--frame", "--start", "--num-frames", "--frame-step", "--size"]),
                               option(st.integers(-1, 40))), max_size=2))
def test_fuzz_trajectory_from_video(video, frames, points, boxes, opts):
    with workdir() as d:
        if video == "frames":
            (d / "v").mkdir()
            for i, (suffix, data) in enumerate(frames):
                (d / "v" / f"{i:05d}{suffix}").write_bytes(data)
            src = d / "v"
        else:
            src = d / "v.mp4"
            shutil.copy(REPO / "examples" / "source.mp4", src)
            if video == "truncated":
                src.write_bytes(src.read_bytes()[:3000])
            elif video == "text":
                src.write_text("not a video")
        missing = d / "no-model"
        argv = ["trajectory", "from-video", src, "--out", d / "o.json", "--sam2", missing, "--grounding", missing,
                "--device", "cpu"]
        for p in points:
            argv += ["--points", p]
        for b in boxes:
            argv += ["--boxes", b]
        if not points and not boxes:
            argv += ["--objects", "ball."]
        for flag, value in opts:
            argv += [flag, value]
        run("trajectory from-video", argv, d, [d / "o.json"])


# ---------------------------------------------------------------------------------------- models


@FUZZ
@given(kind=st.sampled_from(["bytes", "truncated", "dict", "nan"]), data=st.binary(max_size=200),
       out=st.sampled_from(["conv", "ckpt.pt", "conv/sub"]))
def test_fuzz_convert_official(kind, data, out):
    import torch

    with workdir() as d:
        ckpt = d / "ckpt.pt"
        if kind == "bytes":
            ckpt.write_bytes(data)
        else:
            sd = {"state_dict": {"patch_embed.proj.weight": torch.zeros(8, 32, 2, 2),
                                 "out_projectors.0.weight": torch.full((8, 8, 1, 1),
                                                                       float("nan") if kind == "nan" else 0.0)}}
            torch.save(sd if kind != "dict" else {"x": [1, 2], "state_dict": data}, ckpt)
            if kind == "truncated":
                ckpt.write_bytes(ckpt.read_bytes()[: len(data) * 5])
        run("convert official", ["convert", "official", ckpt, "--out", d / out], d, [d / out])


# ---------------------------------------------------------------------------------------- generate, train


@FUZZ_SLOW
@given(image=image_bytes(), text=st.one_of(st.just(None), spec(masks_allowed=False)),
       opts=st.lists(st.tuples(st.sampled_from(["--size", "--guidance", "--control-scale", "--seed", "--kind",
                                                "--frames", "--steps"]), st.data()), max_size=2,
                     unique_by=lambda x: x[0]),
       out=st.sampled_from(["o.mp4", "o.gif", "img", "s.mp4", "ro", "sub/o.mp4", "data/o.mp4"]))
def test_fuzz_generate(dataset, image, text, opts, out):
    valid = {"--size": st.sampled_from(["32x32", "64x64", "0x0", "40000x40000", "17x17", "x"]),
             "--guidance": st.floats(-1, 200), "--control-scale": st.floats(-1, 200), "--seed": st.integers(-1, 2**33),
             "--kind": st.sampled_from(["mask", "box", "sparse_box", "x"]), "--frames": st.integers(-1, 40),
             "--steps": st.sampled_from([0, 1001, 10**12, -1])}
    with workdir() as d:
        copy_dataset(dataset, d)
        img = d / f"img{image[0]}"
        img.write_bytes(image[1])
        if text is None:
            shutil.copy(REPO / "examples" / "trajectory.json", d / "s.json")
        else:
            (d / "s.json").write_text(text)
        target = {"img": img, "ro": Path("/sys/o.mp4") if os.geteuid() == 0 else d / "o.mp4"}.get(out, d / out)
        argv = ["generate", "--image", img, "--trajectory", d / "s.json", "--prompt", "a ball", "--out", target,
                "--controlnet", TINY / "stage2", "--steps", "1"]
        for flag, data in opts:
            argv += [flag, data.draw(option(valid[flag]))]
        outputs = [target, target.with_suffix(".json"), target.with_name(target.stem + ".preview.gif"),
                   target.with_name(target.stem + ".preview.png")]
        run("generate", argv, d, [o for o in outputs if d in o.parents])


@FUZZ_SLOW
@given(fields=st.dictionaries(
    st.sampled_from(["seed", "lambda_seg", "optim", "loop", "data", "noise", "controlnet_layers", "segment_head",
                     "stage", "kind", "model", "unknown"]),
    st.one_of(numbers(), st.none(), st.text(max_size=4), st.dictionaries(
        st.sampled_from(["lr", "max_steps", "batch_size", "grad_accum", "flow_shift", "num_frames", "size", "x",
                         "weight_decay", "save_every", "stride"]),
        st.one_of(numbers(), st.lists(numbers(), max_size=3)),
        max_size=2)), max_size=2),
    output_dir=st.sampled_from(["run", "data", "data/run", "f/run", "ro/run", "run/../data"]))
def test_fuzz_train_config(dataset, fields, output_dir):
    import yaml

    with workdir() as d:
        root = copy_dataset(dataset, d)
        (d / "f").write_text("a file")
        out = {"ro/run": Path("/sys/run") if os.geteuid() == 0 else d / "run"}.get(output_dir, d / output_dir)
        cfg = {"base": str(TINY / "base"), "output_dir": str(out),
               "data": {"dataset": str(root), "num_frames": 9, "size": [32, 32]},
               "loop": {"max_steps": 1, "mixed_precision": "no"}}
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        if isinstance(cfg.get("loop"), dict) and isinstance(cfg["loop"].get("max_steps"), int):
            assume(cfg["loop"]["max_steps"] <= 2)  # a valid config trains: keep it short
        try:
            (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        except (yaml.YAMLError, ValueError, OverflowError):
            (d / "c.yaml").write_text("base: [")
        outputs = [out] if d in out.parents else []
        run("train", ["train", "--config", d / "c.yaml", "--no-progress"], d, outputs)


# ---------------------------------------------------------------------------------------- readers


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(json_values().map(dumps), st.text(alphabet='[]{}"\\ab,:', max_size=60)))
def test_json_depth_counts_like_the_character_loop(text):
    """limits.json_depth (strings cut by a regex, brackets counted in numpy: 3x faster on a MagicData
    annotation) against the character-by-character count it replaced; both stop mattering past the
    limit, where the loop returns early."""
    from magicmotion.limits import MAX_JSON_DEPTH, _json_depth_slow, json_depth

    fast, slow = json_depth(text), _json_depth_slow(text)
    assert fast == slow or (fast > MAX_JSON_DEPTH and slow > MAX_JSON_DEPTH)


# ---------------------------------------------------------------------------------------- bench run, bench score,
# train precompute, convert wan-fun, demo, app (a tiny valid input where the command needs one; heavy
# commands get FUZZ_SLOW or a hostile value in every example, so a valid run stays rare and short)


@pytest.fixture(scope="module")
def bench_dir(dataset, tmp_path_factory) -> Path:
    """A benchmark set of the 2-clip dataset (9 frames each), and its ground-truth run, both inputs."""
    from magicmotion.bench.runner import run_bench
    from magicmotion.bench.sets import build_bench

    root = tmp_path_factory.mktemp("fuzz-bench")
    build_bench(dataset, root / "bench", per_bucket=1, num_frames=9, progress=False)
    run_bench(root / "bench", root / "gt", ground_truth=True, progress=False)
    return root


RUN_DAMAGE = ["none", "zero video", "truncated video", "text video", "folder video", "no video", "run.json field",
              "run.json text", "video symlinked out", "scores.json text"]


def damage_run(run_dir: Path, how: str, value, text: str) -> None:
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    video = videos[0] if videos else run_dir / "videos" / "x.mp4"
    if how == "zero video":
        video.write_bytes(b"")
    elif how == "truncated video":
        video.write_bytes(video.read_bytes()[: len(text) * 97])
    elif how == "text video":
        video.write_text(text)
    elif how == "folder video":
        video.unlink(missing_ok=True)
        video.mkdir()
    elif how == "no video":
        video.unlink(missing_ok=True)
    elif how == "video symlinked out":
        video.unlink(missing_ok=True)
        video.symlink_to("/etc/hostname")
    elif how == "run.json text":
        (run_dir / "run.json").write_text(text)
    elif how == "run.json field":
        record = json.loads((run_dir / "run.json").read_text())
        keys = sorted(record) or ["x"]
        record[keys[len(text) % len(keys)]] = value
        (run_dir / "run.json").write_text(dumps(record))
    elif how == "scores.json text":
        (run_dir / "scores.json").write_text(text)


@FUZZ_SLOW
@given(how=st.sampled_from(DAMAGE), value=json_values(), text=st.text(max_size=20),
       opts=st.lists(st.tuples(st.sampled_from(["--control-scale", "--guidance", "--seed", "--size", "--sparse-keys",
                                                "--kind", "--label", "--trajectory-guidance", "--control-every"]),
                               st.data()), max_size=2, unique_by=lambda x: x[0]),
       ground_truth=st.booleans(), out=st.sampled_from(["run", "bench", "bench/run", "f", "run/x", "data"]))
def test_fuzz_bench_run(bench_dir, dataset, how, value, text, opts, ground_truth, out):
    valid = {"--control-scale": st.floats(-1, 20), "--guidance": st.floats(-1, 20), "--seed": st.integers(-1, 2**33),
             "--size": st.sampled_from(SIZES), "--sparse-keys": st.integers(-1, 12),
             "--kind": st.sampled_from(["mask", "box", "sparse_box", "x"]), "--label": st.text(max_size=8),
             "--trajectory-guidance": st.floats(-1, 5), "--control-every": st.integers(-1, 3)}
    with workdir() as d:
        shutil.copytree(bench_dir / "bench", d / "bench", symlinks=True)
        copy_dataset(dataset, d)
        (d / "f").write_text("a file")
        damage(d / "bench", how, value, text)
        # the shipped tiny model, one clip, one step: a valid example takes a second or two
        argv = ["bench", "run", d / "bench", "--out", d / out, "--limit", "1", "--steps", "1", "--device", "cpu"]
        argv += ["--ground-truth"] if ground_truth else []
        for flag, data in opts:
            value_ = data.draw(option(valid[flag]))
            assume(not (flag == "--size" and value_ in ("64x64", "48x32", "40000x40000", "8192x1")))
            argv += [flag, value_]
        run("bench run", argv, d, [d / out])


@FUZZ
@given(how=st.sampled_from(RUN_DAMAGE), value=json_values(), text=st.text(max_size=20),
       opts=st.lists(st.tuples(st.sampled_from(["--fvd-frames", "--fid-stride", "--segmenter", "--sam2", "--inception",
                                                "--i3d", "--device"]), st.data()), max_size=2,
                     unique_by=lambda x: x[0]),
       target=st.sampled_from(["run", "run", "bench", "f", "nope", "run/videos"]))
def test_fuzz_bench_score(bench_dir, how, value, text, opts, target):
    missing = "no-model"  # weights are refused where they would load: nothing downloads
    valid = {"--fvd-frames": st.integers(-1, 20), "--fid-stride": st.integers(-1, 5),
             "--segmenter": st.sampled_from(["classic", "sam2", "x"]),
             "--sam2": st.sampled_from([missing, "f", "../x", ""]), "--inception": st.sampled_from([missing, "f", ""]),
             "--i3d": st.sampled_from([missing, "f", "run/run.json"]), "--device": st.sampled_from(["cpu", "x"])}
    with workdir() as d:
        shutil.copytree(bench_dir / "bench", d / "bench", symlinks=True)
        shutil.copytree(bench_dir / "gt", d / "run", symlinks=True)
        (d / "f").write_text("a file")
        record = json.loads((d / "run" / "run.json").read_text())  # the run names its bench: this copy
        record["bench"] = str(d / "bench")
        (d / "run" / "run.json").write_text(json.dumps(record))
        damage_run(d / "run", how, value, text)
        argv = ["bench", "score", d / target]
        for flag, data in opts:
            v = data.draw(option(valid[flag]))
            argv += [flag, str(d / v) if flag in ("--sam2", "--inception", "--i3d") and v else v]
        run("bench score", argv, d, [d / "run" / "scores.json"] if target == "run" else [])


@FUZZ_SLOW
@given(fields=st.dictionaries(st.sampled_from(["data", "base", "stage", "kind", "unknown"]),
                              st.one_of(numbers(), st.none(), st.text(max_size=4), st.dictionaries(
                                  st.sampled_from(["num_frames", "size", "dataset", "precomputed", "split", "x"]),
                                  st.one_of(numbers(), st.lists(numbers(), max_size=3), st.text(max_size=4)),
                                  max_size=2)), max_size=2),
       how=st.sampled_from(DAMAGE), value=json_values(), text=st.text(max_size=20),
       out=st.sampled_from(["pre", "data", "data/pre", "f", "c.yaml", "pre/x", None]),
       kinds=st.one_of(st.none(), st.sampled_from(["mask", "box,mask", "x", ",", "", "mask,mask", "../x"])),
       batch=st.one_of(st.none(), option(st.integers(-1, 5000))),
       dtype=st.sampled_from([None, "float32", "bfloat16", "x"]))
def test_fuzz_train_precompute(dataset, fields, how, value, text, out, kinds, batch, dtype):
    import yaml

    with workdir() as d:
        root = copy_dataset(dataset, d)
        damage(root, how, value, text)
        (d / "f").write_text("a file")
        cfg = {"base": str(TINY / "base"), "output_dir": str(d / "run"),
               "data": {"dataset": str(root), "num_frames": 9, "size": [32, 32], "precomputed": str(d / "pre2")}}
        for key, v in fields.items():
            cfg[key] = {**cfg[key], **v} if isinstance(v, dict) and isinstance(cfg.get(key), dict) else v
        try:
            (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        except (yaml.YAMLError, ValueError, OverflowError):
            (d / "c.yaml").write_text("data: [")
        argv = ["train", "precompute", "--config", d / "c.yaml", "--no-progress"]
        argv += ["--out", d / out] if out else []
        argv += ["--kinds", kinds] if kinds is not None else []
        argv += ["--batch-size", batch] if batch is not None else []
        argv += ["--dtype", dtype] if dtype else []
        outputs = [d / out] if out else [d / "pre2"]
        data = cfg.get("data")
        if not out and isinstance(data, dict) and isinstance(data.get("precomputed"), str):
            outputs.append(d / data["precomputed"]) if not Path(data["precomputed"]).is_absolute() else None
        run("train precompute", argv, d, [o for o in outputs if d in o.parents])


@pytest.fixture(scope="module")
def wan_release_dir(tmp_path_factory) -> Path:
    import sys

    sys.path.insert(0, str(REPO / "tests" / "models"))  # the tiny release-layout builder
    from wan_release import write_release

    return write_release(tmp_path_factory.mktemp("fuzz-wan") / "rel")


WAN_FILES = ["config.json", "diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth",
             "models_t5_umt5-xxl-enc-bf16.pth", "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
             "google/umt5-xxl"]


@FUZZ
@given(file=st.sampled_from(WAN_FILES), how=st.sampled_from(["none", "zero", "truncated", "bytes", "folder",
                                                              "missing", "json", "nan", "link out"]),
       data=st.binary(max_size=200), value=json_values(),
       out=st.sampled_from(["conv", "rel", "rel/sub", "f", "conv/sub/x", "full"]),
       flow_shift=st.one_of(st.none(), option(st.floats(-1, 20))),
       image_encoder=st.sampled_from([None, "nope", "f", "rel"]))
def test_fuzz_convert_wan_fun(wan_release_dir, file, how, data, value, out, flow_shift, image_encoder):
    with workdir() as d:
        rel = d / "rel"
        shutil.copytree(wan_release_dir, rel, symlinks=True)
        (d / "f").write_text("a file")
        (d / "full").mkdir()
        (d / "full" / "x").write_text("not empty")
        p = rel / file
        if how != "none" and p.is_dir():
            shutil.rmtree(p)
            if how in ("zero", "bytes", "json", "truncated"):
                p.write_bytes(data)
        elif how == "zero":
            p.write_bytes(b"")
        elif how == "truncated":
            p.write_bytes(p.read_bytes()[: len(data) * 50])
        elif how == "bytes":
            p.write_bytes(data)
        elif how == "folder":
            p.unlink()
            p.mkdir()
        elif how == "missing":
            p.unlink()
        elif how == "json":
            if file == "config.json":
                cfg = json.loads(p.read_text())
                keys = sorted(cfg)
                cfg[keys[len(data) % len(keys)]] = value
                p.write_text(dumps(cfg))
            else:
                p.write_text(dumps(value))
        elif how == "nan" and p.suffix == ".pth":
            import torch

            sd = torch.load(p, weights_only=True)
            key = sorted(sd)[len(data) % len(sd)]
            if sd[key].is_floating_point():
                sd[key] = torch.full_like(sd[key], float("nan"))
            torch.save(sd, p)
        elif how == "link out":
            p.unlink()
            p.symlink_to("/etc/hostname")
        argv = ["convert", "wan-fun", rel, "--out", d / out]
        argv += ["--flow-shift", flow_shift] if flow_shift is not None else []
        argv += ["--image-encoder", d / image_encoder] if image_encoder else []
        outputs = [d / out, (d / out).with_name((d / out).name + ".partial")]
        run("convert wan-fun", argv, d, outputs)


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@FUZZ
@given(opts=st.lists(st.tuples(st.sampled_from(["--steps", "--seed", "--device", "--kind"]), st.data()),
                     min_size=1, max_size=2, unique_by=lambda x: x[0]),
       out=st.sampled_from(["demo", "f", "demo/x", "in.png", "full"]))
def test_fuzz_demo(opts, out):
    """Every example carries a hostile value, refused before any model loads (a valid demo generates
    three videos: ~20 s here); the valid run is tests/test_demo.py's."""
    hostile = {"--steps": st.sampled_from(["nan", "-1", "0", "1e9", "x", "", "0x10", "²", str(2**64)]),
               "--seed": st.sampled_from(["nan", "x", "", "1e9", "-1"]),
               "--device": st.sampled_from(["x", "", "meta", "../cpu"] + ([] if cuda() else ["cuda:99"])),
               "--kind": st.sampled_from(["x", "", "MASK", "mask,box"])}
    with workdir() as d:
        (d / "f").write_text("a file")
        (d / "in.png").write_bytes((REPO / "examples" / "first_frame.png").read_bytes())
        (d / "full").mkdir()
        (d / "full" / "x").write_text("kept")
        argv = ["demo", "--out", d / out]
        for flag, data in opts:
            argv += [flag, data.draw(hostile[flag])]
        run("demo", argv, d, [d / out])


@FUZZ
@given(opts=st.lists(st.tuples(st.sampled_from(["--base", "--controlnet", "--sam2", "--port", "--host", "--device",
                                                "--dtype", "--offload", "--weights-dtype", "--cache", "--lora",
                                                "--lora-scale"]), st.data()), max_size=3, unique_by=lambda x: x[0]),
       out=st.sampled_from([None, "out", "f", "out/x", "data", "c.json"]))
def test_fuzz_app(opts, out):
    """The app's checks up to the point where it would serve: `launch` is replaced by one that binds
    nothing (and records the address it was asked for), so no server starts on any address."""
    from unittest import mock

    import magicmotion.app.ui as ui

    paths = st.sampled_from(["nope", "f", "c.json", "../x", "", "out", str(TINY / "base"), str(TINY / "stage2")])
    valid = {"--base": paths, "--controlnet": paths, "--sam2": paths, "--lora": paths,
             "--port": st.integers(-1, 70000), "--host": st.sampled_from(["127.0.0.1", "0.0.0.0", "x", "", "::1"]),
             "--device": st.sampled_from(["cpu", "x", "cuda:99"]), "--dtype": st.sampled_from(["fp32", "bf16", "x"]),
             "--offload": st.sampled_from(["none", "model", "x"]), "--weights-dtype": st.sampled_from(["fp8", "x"]),
             "--cache": st.sampled_from(["none", "faster", "x"]), "--lora-scale": st.floats(-2, 2)}
    launched = []
    real_build = ui.build_app

    def build_app(*a, **k):
        demo = real_build(*a, **k)
        demo.block_thread = lambda: None
        return demo

    def launch(demo, host="127.0.0.1", port=7860, **kwargs):
        launched.append((host, port))
        return f"http://{host}:{port}/"

    with workdir() as d, mock.patch.object(ui, "launch", launch), mock.patch.object(ui, "build_app", build_app):
        (d / "f").write_text("a file")
        (d / "c.json").write_text("{}")
        (d / "data").mkdir()
        argv = ["app"] + (["--out", d / out] if out else ["--out", d / "tmp-out"])
        for flag, data in opts:
            v = data.draw(option(valid[flag]))
            argv += [flag, str(d / v) if flag in ("--base", "--controlnet", "--sam2", "--lora") and v and
                     not v.startswith("/") else v]
        code, _ = run("app", argv, d, [d / (out or "tmp-out")])
        assert code != 0 or len(launched) == 1
