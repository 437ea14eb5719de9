"""Hostile inputs through every CLI entry point: each row builds its bad input in code (decompression
bombs, deep JSON, huge integers, NaN, absurd sizes, broken datasets, odd outputs) and the command must
answer exit 2 with one line naming the file, and leave nothing new on disk. A new command joins by
adding a row. See docs/limits.md for the limits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from shared_helpers import png_header

from magicmotion.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = REPO / "src" / "magicmotion" / "assets" / "tiny" / "base"
FIRST_FRAME = REPO / "examples" / "first_frame.png"

# ---------------------------------------------------------------------------------------- the corpus


def spec_text(width=64, height=64, frames=9, box="[8, 8, 24, 24]", key='"0"', masks="{}") -> str:
    return (f'{{"version": 1, "width": {width}, "height": {height}, "num_frames": {frames}, '
            f'"objects": [{{"id": 1, "boxes": {{{key}: {box}}}, "masks": {masks}}}]}}')


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def render(spec: Path, *extra) -> list[str]:
    return ["trajectory", "render", str(spec), "--out", str(spec.parent / "maps.mp4"), *extra]


def config(tmp: Path, data: Path, extra: str = "", base: Path = TINY_BASE, output_dir: Path | None = None) -> Path:
    """A tiny training config on dataset `data`, written to tmp/c.yaml."""
    out = output_dir or tmp / "run"
    return write(tmp / "c.yaml", f"base: {base}\noutput_dir: {out}\ndata: {{dataset: {data}, num_frames: 9, "
                                 f"size: [32, 32]}}\n{extra}")


def evil_base(tmp: Path) -> Path:
    base = tmp / "evil"
    shutil.copytree(TINY_BASE, base)
    index = json.loads((base / "model_index.json").read_text())
    index["scheduler"] = ["mm_evil", "UniPCMultistepScheduler"]
    (base / "model_index.json").write_text(json.dumps(index))
    return base


@pytest.fixture(autouse=True)
def library_bars_restored():
    """`train --no-progress` turns transformers' and diffusers' loading bars off in this process: on
    again after each row, as they were."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled()
    yield
    for on, module in zip(before, (hf_logging, diffusers_logging)):
        module.enable_progress_bar() if on else module.disable_progress_bar()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from magicmotion.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("hostile") / "data"
    synthesize(root, clips=2, frames=9, size=(32, 32), seed=0, test_fraction=0.0, progress=False)
    return root


@pytest.fixture(scope="session")
def bench(dataset) -> Path:
    from magicmotion.bench.sets import build_bench

    out = dataset.parent / "bench"
    build_bench(dataset, out, per_bucket=2, num_frames=9, progress=False)
    return out


def broken_dataset(tmp: Path, dataset: Path, damage) -> Path:
    root = tmp / "broken"
    shutil.copytree(dataset, root)
    damage(root)
    return root


def first_video(root: Path) -> Path:
    return sorted((root / "videos").glob("*.mp4"))[0]


def edit_index(root: Path, **fields) -> None:
    lines = (root / "index.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first.update(fields)
    lines[0] = json.dumps(first)
    (root / "index.jsonl").write_text("\n".join(lines) + "\n")


def csv_in(tmp: Path) -> str:
    """A curation input CSV (its video is never reached)."""
    return str(write(tmp / "in.csv", "video,caption\nx.mp4,a\n"))


def bench_build(root: Path) -> list[str]:
    return ["bench", "build", str(root), "--out", str(root.parent / "built"), "--frames", "9", "--per-bucket", "1"]


# (id, build(tmp, dataset, bench) -> argv, what the one line must name)
CASES = [
    # images and masks: decompression bombs refused from the header
    ("render: bomb mask", lambda t, d, b: render(write(t / "s.json", spec_text(masks='{"0": "bomb.png"}')))
     if png_header(t / "bomb.png", 20000, 20000) else None, "bomb.png"),
    ("from-masks: bomb annotation", lambda t, d, b: ["trajectory", "from-masks", str(t / "ann"), "--out",
                                                     str(t / "s.json")]
     if (t / "ann").mkdir() or png_header(t / "ann" / "00000.png", 20000, 20000) else None, "00000.png"),
    ("generate: bomb image", lambda t, d, b: ["generate", "--image", str(png_header(t / "big.png", 20000, 20000)),
                                              "--trajectory", str(REPO / "examples" / "trajectory.json"),
                                              "--prompt", "a", "--out", str(t / "o.mp4")], "big.png"),
    # specs: absurd sizes and frame counts, deep JSON, odd keys, huge numbers
    ("spec 40000x4000", lambda t, d, b: render(write(t / "s.json", spec_text(40000, 4000))), "s.json"),
    ("spec 10^12 frames", lambda t, d, b: render(write(t / "s.json", spec_text(frames=10**12))), "s.json"),
    ("spec 1 Gpx video", lambda t, d, b: render(write(t / "s.json", spec_text(8192, 8192, 1021))), "s.json"),
    ("deep JSON", lambda t, d, b: render(write(t / "s.json", "[" * 100000 + "]" * 100000)), "s.json"),
    ("frame key ²", lambda t, d, b: render(write(t / "s.json", spec_text(key='"\u00b2"'))), "s.json"),
    ("frame key --1", lambda t, d, b: render(write(t / "s.json", spec_text(key='"--1"'))), "s.json"),
    ("box 10^400", lambda t, d, b: render(write(t / "s.json", spec_text(box=f"[1{'0' * 400}, 0, 1, 1]"))),
     "s.json"),
    ("box 1e400", lambda t, d, b: render(write(t / "s.json", spec_text(box="[0, 0, 1e400, 1]"))), "s.json"),
    ("RLE counts 10^400", lambda t, d, b: render(write(t / "s.json", spec_text(
        masks=f'{{"0": {{"size": [64, 64], "counts": [1{"0" * 400}]}}}}'))), "s.json"),
    ("render --size 40000x40000", lambda t, d, b: render(write(t / "s.json", spec_text()), "--size", "40000x40000"),
     "--size"),
    ("spec not UTF-8", lambda t, d, b: render(t / "s.json") if (t / "s.json").write_bytes(b"\xff\xfe{") else None,
     "s.json"),
    ("render --seed -1", lambda t, d, b: render(write(t / "s.json", spec_text()), "--seed", "-1"), "--seed"),
    ("render --seed 2^64", lambda t, d, b: render(write(t / "s.json", spec_text()), "--seed", str(2**64)), "--seed"),
    ("plan --frames 10^12", lambda t, d, b: ["plan", "--base", str(TINY_BASE), "--frames", str(10**12)], "--frames"),
    ("plan --size 40000x40000", lambda t, d, b: ["plan", "--base", str(TINY_BASE), "--size", "40000x40000"], "--size"),
    # data synth: every argument checked before anything is written
    ("synth --size 30000x3000", lambda t, d, b: ["data", "synth", "--out", str(t / "syn"), "--size", "30000x3000"],
     "--size"),
    ("synth --fps nan", lambda t, d, b: ["data", "synth", "--out", str(t / "syn"), "--fps", "nan"], "--fps"),
    ("synth --fps inf", lambda t, d, b: ["data", "synth", "--out", str(t / "syn"), "--fps", "inf"], "--fps"),
    ("synth --seed 2^64", lambda t, d, b: ["data", "synth", "--out", str(t / "syn"), "--seed", str(2**64)], "--seed"),
    ("synth --frames 10^6", lambda t, d, b: ["data", "synth", "--out", str(t / "syn"), "--frames", "1000000"],
     "--frames"),
    # training configs: NaN / inf / huge values refused field by field, odd outputs, model folders
    ("train lr .nan", lambda t, d, b: ["train", "--config", str(config(t, d, "optim: {lr: .nan}"))], "optim.lr"),
    ("train lr .inf", lambda t, d, b: ["train", "--config", str(config(t, d, "optim: {lr: .inf}"))], "optim.lr"),
    ("train lambda_seg .nan", lambda t, d, b: ["train", "--config", str(config(t, d, "lambda_seg: .nan"))],
     "lambda_seg"),
    ("train flow_shift .nan", lambda t, d, b: ["train", "--config", str(config(t, d, "noise: {flow_shift: .nan}"))],
     "flow_shift"),
    ("train max_steps .inf", lambda t, d, b: ["train", "--config", str(config(t, d, "loop: {max_steps: .inf}"))],
     "max_steps"),
    ("train seed 2^64", lambda t, d, b: ["train", "--config", str(config(t, d, f"seed: {2**64}"))], "seed"),
    ("train seed -1", lambda t, d, b: ["train", "--config", str(config(t, d, "seed: -1"))], "seed"),
    ("train size 40000", lambda t, d, b: ["train", "--config", str(config(
        t, d, "data: {dataset: x, size: [40000, 4000]}"))],
     "c.yaml"),
    ("train config nested 100k deep", lambda t, d, b: ["train", "--config", str(write(
        t / "c.yaml", "a: " + "[" * 100000 + "]" * 100000))], "nested deeper"),
    ("train config not text", lambda t, d, b: ["train", "--config", str(png_header(t / "c.yaml", 8, 8))], "c.yaml"),
    ("train config malformed YAML", lambda t, d, b: ["train", "--config", str(write(
        t / "c.yaml", "base: [1, 2\nx: : :\n"))],
     "c.yaml: line 2, column"),
    ("filter config nested 100k deep", lambda t, d, b: ["data", "filter", str(d), "--out", str(t / "k"), "--config",
                                                        str(
        write(t / "f.yaml", "motion: " + "[" * 100000 + "]" * 100000))], "f.yaml"),
    ("app --port 99999", lambda t, d, b: ["app", "--port", "99999"], "--port"),
    ("train output_dir a file", lambda t, d, b: ["train", "--config", str(config(
        t, d, output_dir=write(t / "f", "x")))],
     "output_dir"),
    ("train evil base", lambda t, d, b: ["train", "--config", str(config(t, d, base=evil_base(t)))], "mm_evil"),
    ("precompute --batch-size 0", lambda t, d, b: ["train", "precompute", "--config", str(config(t, d)), "--out",
                                                   str(t / "pre"), "--batch-size", "0"], "--batch-size"),
    ("precompute --out a file", lambda t, d, b: ["train", "precompute", "--config", str(config(t, d)), "--out",
                                                 str(write(t / "f", "x"))], "f: is a file"),
    # bench: odd outputs and settings checked before folders are made, broken datasets before writing
    ("bench run --out a file", lambda t, d, b: ["bench", "run", str(b), "--out", str(write(t / "f", "x"))], "f"),
    ("bench run --steps 0", lambda t, d, b: ["bench", "run", str(b), "--out", str(t / "r"), "--steps", "0"], "steps"),
    ("bench run --sparse-keys -1", lambda t, d, b: ["bench", "run", str(b), "--out", str(t / "r"),
                                                    "--sparse-keys", "-1"],
     "--sparse-keys"),
    ("curate --gpus-per-actor nan", lambda t, d, b: ["data", "curate", csv_in(t), "--out", str(t / "cur"),
                                                     "--gpus-per-actor", "nan"], "gpus_per_actor"),
    ("import-magicdata --workers -1", lambda t, d, b: ["data", "import-magicdata", str(d), "--out", str(t / "imp"),
                                                       "--workers", "-1"], "--workers"),
    ("bench run --seed 2^32", lambda t, d, b: ["bench", "run", str(b), "--out", str(t / "r"), "--seed", str(2**32)],
     "seed"),
    ("bench build: video missing", lambda t, d, b: bench_build(broken_dataset(t, d, lambda r: first_video(r).unlink())),
     ".mp4"),
    ("bench build: zero-byte video", lambda t, d, b: bench_build(broken_dataset(
        t, d, lambda r: first_video(r).write_bytes(b""))), ".mp4"),
    ("bench build: text-file video", lambda t, d, b: bench_build(broken_dataset(
        t, d, lambda r: first_video(r).write_text("not a video"))), ".mp4"),
    ("bench build: truncated video", lambda t, d, b: bench_build(broken_dataset(
        t, d, lambda r: first_video(r).write_bytes(first_video(r).read_bytes()[:200]))), ".mp4"),
    ("bench build: NaN fps", lambda t, d, b: bench_build(broken_dataset(
        t, d, lambda r: edit_index(r, fps=float("nan")))),
     "index.jsonl"),
    ("bench build: frames disagree", lambda t, d, b: bench_build(broken_dataset(
        t, d, lambda r: edit_index(r, num_frames=40))), "clip"),
    # curation inputs
    ("curate --size 40000x40000", lambda t, d, b: ["data", "curate", csv_in(t), "--out", str(t / "cur"),
                                                   "--size", "40000x40000"], "--size"),
    ("curate --scene-threshold nan", lambda t, d, b: ["data", "curate", str(write(
        t / "in.csv", "video,caption\nx.mp4,a\n")), "--out", str(t / "cur"), "--scene-threshold", "nan"],
     "scene_threshold"),
    ("curate --clip-frames 10^9", lambda t, d, b: ["data", "curate", str(write(
        t / "in.csv", "video,caption\nx.mp4,a\n")), "--out", str(t / "cur"), "--clip-frames", str(10**9)],
     "clip_frames"),
    ("curate CSV not UTF-8", lambda t, d, b: ["data", "curate", str(t / "in.csv"), "--out", str(t / "cur")]
     if (t / "in.csv").write_bytes(b"video,caption\n\xff\xfe,x\n") else None, "in.csv"),
]


# ---------------------------------------------------------------------------------------- round 3 (issue 36)
# What a fresh probe found: inputs overwritten, paths leaving their root, NaN passing, tracebacks, late
# checks. Each row failed (exit 0, exit 1 or a late error) before the fix.


def examples(t: Path) -> Path:
    """A copy of examples/ (first frame, specs, mask PNGs) in t/ex."""
    shutil.copytree(REPO / "examples", t / "ex", ignore=shutil.ignore_patterns("*.mp4"))
    return t / "ex"


def maps_video(path: Path, codec: str = "h264") -> Path:
    """Box maps of examples/trajectory.json as a video (codec h264 via our writer, or mjpeg via PyAV)."""
    import av

    from magicmotion.io import write_video
    from magicmotion.trajectory import load, render

    maps = render(load(REPO / "examples" / "trajectory.json"), "box")
    if codec == "h264":
        write_video(path, maps, fps=8)
        return path
    with av.open(str(path), "w") as c:
        stream = c.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = maps.shape[2], maps.shape[1], "yuvj420p"
        for frame in maps:
            c.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(stream.encode())
    return path


def read_only(t: Path) -> Path:
    """A folder nothing can be written in: chmod 555, or /sys where this runs as root (root writes
    through permissions; sysfs refuses new files to everyone)."""
    if os.geteuid() == 0:
        return Path("/sys")
    (t / "ro").mkdir()
    (t / "ro").chmod(0o555)
    return t / "ro"


def magicdata_with(t: Path, video_id: str) -> Path:
    """A MagicData folder whose CSV names `video_id`; a real video lies beside (outside) the folder."""
    (t / "md").mkdir()
    shutil.copy(REPO / "examples" / "source.mp4", t / "outside.mp4")
    (t / "md" / "MagicData.csv").write_text(f"video_id,caption\n{video_id},a\n")
    return t / "md"


def npy(path: Path, array=None, **arrays) -> Path:
    import numpy as np

    if arrays:
        np.savez(path, **arrays)
    elif array is None:
        path.write_bytes(b"")
    else:
        np.save(path, array)
    return path


def masks_folder(t: Path, names=("00000.png", "99999.png")) -> Path:
    import numpy as np
    from PIL import Image

    (t / "ann").mkdir()
    label = np.zeros((32, 32), np.uint8)
    label[4:12, 4:12] = 1
    for name in names:
        im = Image.fromarray(label, "P")
        im.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
        im.save(t / "ann" / name)
    return t / "ann"


def two_ids(t: Path, a: int, b: int) -> Path:
    return write(t / "s.json", f'{{"version": 1, "width": 64, "height": 64, "num_frames": 9, "objects": ['
                               f'{{"id": {a}, "boxes": {{"0": [4, 4, 20, 20]}}}}, '
                               f'{{"id": {b}, "boxes": {{"0": [30, 30, 50, 50]}}}}]}}')


def points(t: Path) -> Path:
    import numpy as np

    return npy(t / "p.npy", np.full((9, 3, 2), 30.0) + np.arange(3)[None, :, None])


ROUND3 = [
    # inputs overwritten
    ("preview --out over its --image", lambda t, d, b: ["trajectory", "preview", str(examples(t) / "trajectory.json"),
                                                        "--image", str(t / "ex" / "first_frame.png"), "--out",
                                                        str(t / "ex" / "first_frame.png")],
     "would overwrite an input"),
    ("render maps.mp4 --out maps.mp4", lambda t, d, b: ["trajectory", "render", str(maps_video(t / "maps.mp4")),
                                                        "--out", str(t / "maps.mp4")], "would overwrite an input"),
    ("render --out DIR/ holding the spec", lambda t, d, b: [
        "trajectory", "render", str(examples(t) / "trajectory.json"), "--out", str(t / "ex") + "/"], "holds the input"),
    ("from-maps --out over the maps", lambda t, d, b: ["trajectory", "from-maps", str(maps_video(t / "m.mp4")),
                                                       "--out", str(t / "m.json")] if (t / "m.json").symlink_to(
        t / "m.mp4") is None else None, "would overwrite an input"),
    # paths read from data files stay under their root
    ("import-magicdata: ../ video id", lambda t, d, b: ["data", "import-magicdata", str(magicdata_with(
        t, "../outside.mp4")), "--out", str(t / "imp"), "--quiet"], "MagicData.csv:2: video id '../outside.mp4'"),
    ("import-magicdata: absolute video id", lambda t, d, b: ["data", "import-magicdata", str(magicdata_with(
        t, "/etc/passwd")), "--out", str(t / "imp"), "--quiet"], "MagicData.csv:2: video id '/etc/passwd'"),
    ("import-magicdata --out inside the release", lambda t, d, b: ["data", "import-magicdata", str(magicdata_with(
        t, "v1")), "--out", str(t / "md" / "imported"), "--quiet"], "inside the input folder"),
    ("render: spec mask ../", lambda t, d, b: render(write(t / "s.json", spec_text(masks='{"0": "../x.png"}'))),
     "mask file '../x.png' must be a path inside"),
    ("render: spec mask symlinked out", lambda t, d, b: render(write(t / "s.json", spec_text(masks='{"0": "m.png"}')))
     if (t / "m.png").symlink_to("/etc/passwd") is None else None, "leads outside"),
    # NaN and absurd numbers
    ("filter threshold .nan", lambda t, d, b: ["data", "filter", str(d), "--out", str(t / "k"), "--config",
                                               str(write(t / "f.yaml", "object_area: {min: .nan}\n"))],
     "object_area.min must be a finite number"),
    ("filter motion.size 10^9", lambda t, d, b: ["data", "filter", str(d), "--out", str(t / "k"), "--config",
                                                 str(write(t / "f.yaml", "motion: {size: 1000000000}\n"))],
     "motion.size"),
    ("objects 1 and 256: one colour", lambda t, d, b: render(two_ids(t, 1, 256)), "objects 1 and 256 have the same"),
    ("objects 1 and 22: one release colour", lambda t, d, b: render(two_ids(t, 1, 22), "--palette", "release"),
     "objects 1 and 22 have the same"),
    ("plan --controlnet-layers 10^9", lambda t, d, b: ["plan", "--base", str(TINY_BASE), "--controlnet-layers",
                                                       str(10**9)], "--controlnet-layers must be in 1.."),
    ("from-points --min-size 1e9", lambda t, d, b: ["trajectory", "from-points", str(points(t)), "--frame-size",
                                                    "64x64", "--min-size", "1e9", "--out", str(t / "o.json")],
     "min_size"),
    ("from-points --padding nan", lambda t, d, b: ["trajectory", "from-points", str(points(t)), "--frame-size",
                                                   "64x64", "--padding", "nan", "--out", str(t / "o.json")],
     "padding"),
    # tracebacks
    ("from-points zero-byte .npy", lambda t, d, b: ["trajectory", "from-points", str(npy(t / "z.npy")),
                                                    "--frame-size", "64x64", "--out", str(t / "o.json")],
     "z.npy: not a .npy/.npz array file"),
    ("from-points .npz object array", lambda t, d, b: ["trajectory", "from-points", str(npy(
        t / "o.npz", tracks=__import__("numpy").array([{"a": 1}], dtype=object))), "--frame-size", "64x64", "--out",
        str(t / "o.json")], "o.npz"),
    ("from-points tracks JSON 100k deep", lambda t, d, b: ["trajectory", "from-points", str(write(
        t / "tr.json", "[" * 100000 + "]" * 100000)), "--out", str(t / "o.json")], "tr.json"),
    ("train output_dir under a file", lambda t, d, b: ["train", "--config", str(config(
        t, d, output_dir=write(t / "f", "x") / "run"))], "output_dir"),
    ("train output_dir read-only", lambda t, d, b: ["train", "--config", str(config(
        t, d, output_dir=read_only(t) / "run"))], "cannot write in"),
    # late or missing checks
    ("from-masks 00000.png + 99999.png", lambda t, d, b: ["trajectory", "from-masks", str(masks_folder(t)), "--out",
                                                          str(t / "s.json")], "99999.png: frame 99999 is beyond"),
    ("train output_dir = the dataset", lambda t, d, b: ["train", "--config", str(config(t, d, output_dir=d))],
     "would overwrite an input"),
    ("train output_dir inside the dataset", lambda t, d, b: ["train", "--config", str(config(
        t, d, output_dir=d / "run"))], "inside the input folder"),
    ("generate --out inside a dataset", lambda t, d, b: generate(out=d / "o.mp4"), "inside the dataset"),
    # found by tests/test_fuzz.py (exit 1 before)
    ("fuzz: import-magicdata, a 300-character video id", lambda t, d, b: ["data", "import-magicdata", str(
        magicdata_with(t, "x" * 300)), "--out", str(t / "imp"), "--quiet"], "longer than a file name can be"),
    ("fuzz: render --out a 300-character name", lambda t, d, b: render(write(t / "s.json", spec_text()))[:3] + [
        "--out", str(t / ("x" * 300 + ".mp4"))], "File name too long"),
    ("fuzz: data info on a 300-character folder name", lambda t, d, b: ["data", "info", str(t / ("x" * 300))],
     "File name too long"),
    ("fuzz: bench report, scores.json null", lambda t, d, b: ["bench", "report", str(t), "--out", str(t / "rep")]
     if write(t / "scores.json", "null") else None, "scores.json: the file is None"),
    ("fuzz: bench report, a NaN FID", lambda t, d, b: ["bench", "report", str(t), "--out", str(t / "rep")]
     if write(t / "scores.json", json.dumps({"run": {"label": "a", "bench": "b"}, "segmenter": {"name": "s"},
                                             "overall": {"clips": 1, "fid": float("nan")}, "buckets": {}})) else None,
     "overall.fid is nan"),
    ("from-maps: MJPEG maps, no phantom object", lambda t, d, b: ["trajectory", "from-maps", str(maps_video(
        t / "m.avi", "mjpeg")), "--out", str(t / "m.json")], "dimmed copy"),
]

# ---------------------------------------------------------------------------------------- rows needing more
# Rows of this second table get a Helper `h`: h.tmp, h.data (a 2-clip dataset), h.bench, h.run() (a copy
# of a finished 2-step training run with two checkpoints), h.hold(output) (this test holds the output's
# lock, as a running command would), h.monkeypatch.


class Helper:
    def __init__(self, tmp: Path, data: Path, bench: Path, request, monkeypatch, stack):
        self.tmp, self.data, self.bench, self.monkeypatch = tmp, data, bench, monkeypatch
        self._request, self._stack = request, stack

    def run(self) -> Path:
        """A copy of the finished run (checkpoints step-0000001, step-0000002, final/) in tmp/run."""
        src = self._request.getfixturevalue("trained")
        shutil.copytree(src, self.tmp / "run")
        return self.tmp / "run"

    def hold(self, output: Path) -> Path:
        from magicmotion.locks import output_lock

        self._stack.enter_context(output_lock(output, "output"))
        return output

    def config(self, max_steps: int = 2, data: Path | None = None) -> Path:
        """The tiny training config of the finished run (float32: no CPU autocast warnings)."""
        loop = f'loop: {{max_steps: {max_steps}, save_every: 1, keep_checkpoints: 2, mixed_precision: "no"}}'
        return config(self.tmp, data or self.data, loop)

    def broken(self, damage) -> Path:
        """A copy of the dataset with `damage(root, video)` done to every clip's video."""
        root = self.tmp / "broken"
        shutil.copytree(self.data, root)
        for video in sorted((root / "videos").glob("*.mp4")):
            damage(root, video)
        return root


def nan_loss(h: Helper) -> None:
    """Every training loss is NaN (as a diverging run's would be)."""
    from magicmotion.training.objective import TrainingObjective

    real = TrainingObjective.__call__

    def nan(self, model, batch, generator):
        terms = real(self, model, batch, generator)
        terms["loss"] = terms["loss"] * float("nan")
        return terms

    h.monkeypatch.setattr(TrainingObjective, "__call__", nan)


def no_ray(h: Helper) -> None:
    """Ray not installed (it is here): its import fails as it would."""
    for name in ("ray", "ray.data"):
        h.monkeypatch.setitem(sys.modules, name, None)


def damage_all_checkpoints(h: Helper, damage) -> Path:
    run = h.run()
    for ckpt in sorted((run / "checkpoints").iterdir()):
        damage(ckpt)
    return run


def truncate_weights(ckpt: Path) -> None:
    weights = next((ckpt / "controlnet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])


def generate(image: Path = FIRST_FRAME, trajectory: Path = REPO / "examples" / "trajectory.json",
             out: Path | None = None, *extra) -> list[str]:
    return ["generate", "--image", str(image), "--trajectory", str(trajectory), "--prompt", "a",
            "--out", str(out), *extra]


def empty_dataset(t: Path) -> Path:
    (t / "empty").mkdir()
    (t / "empty" / "index.jsonl").write_text("")
    return t / "empty"


def frames_disagree(root: Path, video: Path) -> None:
    lines = [json.loads(x) for x in (root / "index.jsonl").read_text().splitlines()]
    (root / "index.jsonl").write_text("".join(json.dumps({**r, "num_frames": 40}) + "\n" for r in lines))


def magicdata(t: Path) -> Path:
    (t / "md").mkdir()
    (t / "md" / "MagicData.csv").write_text("video_id,caption\nv1,a\n")
    return t / "md"


def evil_config(folder: Path, config: dict) -> Path:
    """A model folder whose config.json names a class or code of its own."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def davis(t: Path, width: int, height: int) -> Path:
    """A one-sequence DAVIS folder whose annotation PNG claims width x height."""
    root = t / "davis"
    (root / "JPEGImages" / "480p" / "seq").mkdir(parents=True)
    (root / "Annotations" / "480p" / "seq").mkdir(parents=True)
    write_image(root / "JPEGImages" / "480p" / "seq" / "00000.jpg", 32, 32)
    png_header(root / "Annotations" / "480p" / "seq" / "00000.png", width, height)
    return root


def nan_controlnet(t: Path) -> Path:
    """The tiny stage-2 ControlNet with one tensor all NaN."""
    from safetensors.torch import load_file, save_file

    folder = t / "cn"
    shutil.copytree(TINY_BASE.parent / "stage2" / "controlnet", folder)
    weights = next(folder.glob("*.safetensors"))
    tensors = load_file(weights)
    tensors["blocks.0.attn1.to_k.weight"] = tensors["blocks.0.attn1.to_k.weight"] * float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    return folder


def unknown_class_base(t: Path) -> Path:
    """The tiny base whose model_index.json names a tokenizer class transformers does not have (the
    name fits the tokenizer pattern, so only the library can tell)."""
    base = t / "unknown"
    shutil.copytree(TINY_BASE, base)
    index = json.loads((base / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "EvilTokenizer"]
    (base / "model_index.json").write_text(json.dumps(index))
    return base


def no_model_load(h: Helper) -> None:
    """Loading a pipeline fails the row (exit 1): refusals must come before any model work."""
    import magicmotion.pipelines.loading as loading

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the output was checked")

    h.monkeypatch.setattr(loading, "load_pipeline", refuse)


def nan_box(root: Path, video: Path) -> None:
    ann = root / "annotations" / f"{video.stem}.json"
    spec = json.loads(ann.read_text())
    obj = spec["objects"][0]
    obj["boxes"][sorted(obj["boxes"])[0]][0] = float("nan")
    ann.write_text(json.dumps(spec))


def link_away(target: str):
    def damage(root: Path, video: Path) -> None:
        video.unlink()
        video.symlink_to(target)
    return damage


def fewer_frames_everywhere(root: Path, video: Path) -> None:
    """Index and annotation agree on 5 frames; the video has 9."""
    ann = root / "annotations" / f"{video.stem}.json"
    spec = json.loads(ann.read_text())
    spec["num_frames"] = 5
    for o in spec["objects"]:
        o["boxes"] = {k: v for k, v in o["boxes"].items() if int(k) < 5}
        o["masks"] = {k: v for k, v in o.get("masks", {}).items() if int(k) < 5}
    ann.write_text(json.dumps(spec))
    lines = [json.loads(x) for x in (root / "index.jsonl").read_text().splitlines()]
    (root / "index.jsonl").write_text("".join(json.dumps({**r, "num_frames": 5} if r["id"] == video.stem else r)
                                              + "\n" for r in lines))


PID = f"pid {os.getpid()}"
# (id, build(h) -> argv, what the one line must name)
MORE = [
    # round 3 (issue 36): each failed before the fix (exit 0 or 1, or a refusal after the work)
    ("generate: ControlNet with NaN weights", lambda h: generate(out=h.tmp / "o.mp4") + [
        "--controlnet", str(nan_controlnet(h.tmp))], "tensor blocks.0.attn1.to_k.weight holds 16384 NaN"),
    ("generate into a read-only folder, before the model", lambda h: no_model_load(h) or generate(
        out=read_only(h.tmp) / "o.mp4"), "cannot write in"),
    ("generate: model_index names an unknown class", lambda h: generate(out=h.tmp / "o.mp4") + [
        "--base", str(unknown_class_base(h.tmp)), "--controlnet", str(TINY_BASE.parent / "stage2")],
     "transformers.EvilTokenizer, a class transformers does not have"),
    ("data info: zero-byte video", lambda h: ["data", "info", str(h.broken(lambda r, v: v.write_bytes(b"")))],
     "empty (0 bytes)"),
    ("data info: truncated video", lambda h: ["data", "info", str(h.broken(
        lambda r, v: v.write_bytes(v.read_bytes()[:200])))], "unreadable video"),
    ("data info: video symlinked to a non-video", lambda h: ["data", "info", str(h.broken(link_away("/etc/hostname")))],
     "unreadable video"),
    ("data info: video symlinked nowhere", lambda h: ["data", "info", str(h.broken(link_away("/nonexistent.mp4")))],
     "not found"),
    ("data info: NaN box", lambda h: ["data", "info", str(h.broken(nan_box))], "a box coordinate must be a finite"),
    ("data info: index frames disagree", lambda h: ["data", "info", str(h.broken(frames_disagree))], "the index says"),
    ("data info: index and annotation 5 frames, video 9", lambda h: ["data", "info", str(h.broken(
        fewer_frames_everywhere))], "has 9 frames, the index says 5"),

    # generate: settings and first frames refused before the model loads; outputs never over an input
    ("generate --guidance nan", lambda h: generate(out=h.tmp / "o.mp4", *[]) + ["--guidance", "nan"], "--guidance"),
    ("generate --control-scale inf", lambda h: generate(out=h.tmp / "o.mp4") + ["--control-scale", "inf"],
     "--control-scale"),
    ("generate --size 40000x40000", lambda h: generate(out=h.tmp / "o.mp4") + ["--size", "40000x40000"], "40000"),
    ("generate --seed 2^64", lambda h: generate(out=h.tmp / "o.mp4") + ["--seed", str(2**64)], "--seed"),
    ("generate 1x1 first frame", lambda h: generate(write_image(h.tmp / "dot.png", 1, 1), out=h.tmp / "o.mp4"),
     "dot.png: the first frame is 1x1"),
    ("generate 10000x10000 first frame", lambda h: generate(png_header(h.tmp / "huge.png", 10000, 10000),
                                                            out=h.tmp / "o.mp4"), "huge.png"),
    ("generate first frame not an image", lambda h: generate(write(h.tmp / "x.png", "text"), out=h.tmp / "o.mp4"),
     "x.png"),
    ("generate --out over the spec", lambda h: generate(trajectory=shutil.copy(REPO / "examples" / "trajectory.json",
                                                                               h.tmp / "spec.json"),
                                                        out=h.tmp / "spec.mp4"), "would overwrite an input"),
    ("generate evil base", lambda h: generate(out=h.tmp / "o.mp4") + ["--base", str(evil_base(h.tmp))], "mm_evil"),
    # empty datasets: said, not an empty result
    ("data info: empty dataset", lambda h: ["data", "info", str(empty_dataset(h.tmp))], "empty"),
    ("bench build: empty dataset", lambda h: bench_build(empty_dataset(h.tmp)), "empty"),
    ("data filter: empty dataset", lambda h: ["data", "filter", str(empty_dataset(h.tmp)), "--out",
                                              str(h.tmp / "kept")], "empty"),
    # data filter: every clip bad -> exit 2, nothing written (one bad clip of two is skipped: see below)
    ("data filter: videos missing", lambda h: ["data", "filter", str(h.broken(lambda r, v: v.unlink())), "--out",
                                               str(h.tmp / "kept")], "not found"),
    ("data filter: zero-byte videos", lambda h: ["data", "filter", str(h.broken(lambda r, v: v.write_bytes(b""))),
                                                 "--out", str(h.tmp / "kept")], "empty (0 bytes)"),
    ("data filter: text-file videos", lambda h: ["data", "filter", str(h.broken(lambda r, v: v.write_text("no"))),
                                                 "--out", str(h.tmp / "kept")], "unreadable video"),
    ("data filter: truncated videos", lambda h: ["data", "filter", str(h.broken(
        lambda r, v: v.write_bytes(v.read_bytes()[:200]))), "--out", str(h.tmp / "kept")], ".mp4"),
    ("data filter: NaN fps", lambda h: ["data", "filter", str(broken_dataset(h.tmp, h.data, lambda r: edit_index(
        r, fps=float("nan")))), "--out", str(h.tmp / "kept")], "index.jsonl"),
    ("data filter: frames disagree", lambda h: ["data", "filter", str(h.broken(frames_disagree)), "--out",
                                                str(h.tmp / "kept")], "annotation"),
    # training: broken datasets and finished folders before any model loads; NaN loss stops it
    ("train: videos missing", lambda h: ["train", "--config", str(h.config(data=h.broken(lambda r, v: v.unlink())))],
     "not found"),
    ("train: NaN fps", lambda h: ["train", "--config", str(h.config(data=broken_dataset(
        h.tmp, h.data, lambda r: edit_index(r, fps=float("nan")))))], "fps"),
    ("train: NaN loss", lambda h: nan_loss(h) or ["train", "--config", str(h.config()), "--no-progress"],
     "step 1: the loss is not finite"),
    ("train: finished folder, no --resume", lambda h: h.run() and ["train", "--config", str(h.config())],
     "already holds"),
    ("train --resume: every checkpoint's weights truncated", lambda h: damage_all_checkpoints(h, truncate_weights)
     and ["train", "--config", str(h.config(3)), "--resume", "--no-progress"], ".safetensors"),
    ("train --resume: every optimizer.pt truncated", lambda h: damage_all_checkpoints(
        h, lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:50])) and [
        "train", "--config", str(h.config(3)), "--resume", "--no-progress"], "optimizer.pt"),
    ("train --resume: every state.json corrupt", lambda h: damage_all_checkpoints(
        h, lambda c: (c / "state.json").write_text("{not json")) and [
        "train", "--config", str(h.config(3)), "--resume", "--no-progress"], "state.json"),
    # one run per output: a second run exits 2 naming the holder
    ("lock: generate", lambda h: generate(out=h.hold(h.tmp / "o.mp4")), PID),
    ("lock: data curate", lambda h: ["data", "curate", str(write(h.tmp / "in.csv", "video,caption\nx.mp4,a\n")),
                                     "--out", str(h.hold(h.tmp / "cur"))], PID),
    ("lock: data import-magicdata", lambda h: ["data", "import-magicdata", str(magicdata(h.tmp)), "--out",
                                               str(h.hold(h.tmp / "imported"))], PID),
    ("lock: bench run", lambda h: ["bench", "run", str(h.bench), "--out", str(h.hold(h.tmp / "r"))], PID),
    ("lock: train precompute", lambda h: ["train", "precompute", "--config", str(h.config()), "--out",
                                          str(h.hold(h.tmp / "pre"))], PID),
    ("lock: train", lambda h: h.hold(h.tmp / "run") and ["train", "--config", str(h.config())], PID),
    ("import-magicdata: every video missing", lambda h: ["data", "import-magicdata", str(magicdata(h.tmp)), "--out",
                                                         str(h.tmp / "imp"), "--quiet"], "v1.mp4 not found"),
    # outputs: a file where a folder is meant
    ("data filter --out a file", lambda h: ["data", "filter", str(h.data), "--out", str(write(h.tmp / "f", "x")),
                                            "--quiet"], "f: is a file"),
    ("bench build --out a file", lambda h: ["bench", "build", str(h.data), "--out", str(write(h.tmp / "f", "x")),
                                            "--frames", "9"], "f: is a file"),
    ("bench davis --out a file", lambda h: ["bench", "davis", str(davis(h.tmp, 32, 32)), "--out",
                                            str(write(h.tmp / "f", "x"))], "f: is a file"),
    ("bench report: runs not scored", lambda h: ["bench", "report", str(h.tmp), "--out", str(h.tmp / "rep")],
     "scores.json"),
    ("demo --out a file", lambda h: ["demo", "--out", str(write(h.tmp / "f", "x"))], "f: is a file"),
    # found by the fuzzer (tests/test_fuzz.py: demo, app): exit 1, a run without end, an empty folder left
    ("fuzz: demo --steps 2^64", lambda h: ["demo", "--out", str(h.tmp / "dm"), "--steps", str(2**64)], "--steps"),
    ("fuzz: demo --steps 10^8", lambda h: ["demo", "--out", str(h.tmp / "dm"), "--steps", str(10**8)], "--steps"),
    ("fuzz: demo --seed -1", lambda h: ["demo", "--out", str(h.tmp / "dm"), "--seed", "-1"], "--seed"),
    ("fuzz: demo --device meta", lambda h: ["demo", "--out", str(h.tmp / "dm"), "--device", "meta"], "'meta'"),
    ("fuzz: generate --device meta", lambda h: generate(out=h.tmp / "o.mp4") + ["--device", "meta", "--steps", "1"],
     "'meta'"),
    ("fuzz: app --out a file", lambda h: ["app", "--out", str(write(h.tmp / "f", "x"))], "f: is a file"),
    # model folders: only the classes we load, checked before any import
    ("generate evil ControlNet", lambda h: generate(out=h.tmp / "o.mp4") + ["--controlnet", str(evil_config(
        h.tmp / "cn", {"_class_name": "EvilNet"}))], "EvilNet"),
    ("curate evil grounding model", lambda h: ["data", "curate", str(write(
        h.tmp / "in.csv", f"video,caption,objects\n{REPO / 'examples' / 'source.mp4'},a,ball\n")), "--out",
        str(h.tmp / "cur"), "--objects-from", "given", "--clip-frames", "17", "--quiet", "--grounding", str(evil_config(
            h.tmp / "gd", {"model_type": "grounding-dino", "auto_map": {"AutoModel": "mm_evil.X"}}))], "auto_map"),
    # DAVIS: a bomb annotation
    ("bench davis: bomb annotation", lambda h: ["bench", "davis", str(davis(h.tmp, 20000, 20000)), "--out",
                                                str(h.tmp / "dv")], "00000.png"),
    # Ray Data not installed
    ("curate --engine ray without Ray", lambda h: no_ray(h) or ["data", "curate", str(write(
        h.tmp / "in.csv", "video,caption\nx.mp4,a\n")), "--out", str(h.tmp / "cur"), "--engine", "ray"], "ray"),
    ("import-magicdata --engine ray without Ray", lambda h: no_ray(h) or [
        "data", "import-magicdata", str(magicdata(h.tmp)), "--out", str(h.tmp / "imp"), "--engine", "ray"], "ray"),
]


def write_image(path: Path, width: int, height: int) -> Path:
    from PIL import Image

    Image.new("RGB", (width, height), (90, 90, 90)).save(path)
    return path


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory) -> Path:
    """A finished 2-step run of the tiny model on the dataset, checkpoints at steps 1 and 2."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = config(tmp, dataset, 'loop: {max_steps: 2, save_every: 1, keep_checkpoints: 2, mixed_precision: "no"}')
    assert main(["train", "--config", str(cfg), "--no-progress"]) == 0
    return tmp / "run"


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(argv, names, tmp: Path, watched: list[Path], capsys) -> None:
    """exit 2, one line naming `names`, nothing new or changed under tmp and the watched folders."""
    capsys.readouterr()
    before = [tree(p) for p in (tmp, *watched)]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("magicmotion: error: ") and names in err[0], err
    assert [tree(p) for p in (tmp, *watched)] == before, "the command left or changed files"


@pytest.mark.parametrize("build, names", [pytest.param(b, n, id=i) for i, b, n in CASES + ROUND3])
def test_hostile_input_is_one_line_and_exit_2(build, names, tmp_path, dataset, bench, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # where an `mm_evil` module would be found
    (tmp_path / "mm_evil.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    argv = build(tmp_path, dataset, bench)
    assert_refused(argv, names, tmp_path, [dataset, bench], capsys)
    assert not (tmp_path / "mm_evil.py.ran").exists()


@pytest.mark.parametrize("build, names", [pytest.param(b, n, id=i) for i, b, n in MORE])
def test_hostile_run_is_one_line_and_exit_2(build, names, tmp_path, dataset, bench, capsys, monkeypatch, request):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mm_evil.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    with contextlib.ExitStack() as stack:
        argv = build(Helper(tmp_path, dataset, bench, request, monkeypatch, stack))
        assert_refused(argv, names, tmp_path, [dataset, bench], capsys)
    assert not (tmp_path / "mm_evil.py.ran").exists()


# ---------------------------------------------------------------------------------------- skipped, not stopped


def test_filter_skips_a_bad_clip_and_names_it(tmp_path, dataset, capsys):
    """One clip of two with a text file for a video: named and skipped, the other kept (exit 0)."""
    root = broken_dataset(tmp_path, dataset, lambda r: first_video(r).write_text("not a video"))
    bad = first_video(root).stem
    assert main(["data", "filter", str(root), "--out", str(tmp_path / "kept"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "kept 1 of 2 clips" in out and "1 unreadable, skipped" in out and bad in out
    kept = [json.loads(x)["id"] for x in (tmp_path / "kept" / "index.jsonl").read_text().splitlines()]
    assert len(kept) == 1 and bad not in kept


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, dataset, bench, capsys, monkeypatch, request):
    """The newest checkpoint's state.json corrupt: resume says it skips it (naming the file) and goes on
    from the one before (step 1), making step 2 again."""
    with contextlib.ExitStack() as stack:
        h = Helper(tmp_path, dataset, bench, request, monkeypatch, stack)
        run = h.run()
        (run / "checkpoints" / "step-0000002" / "state.json").write_text("{not json")
        capsys.readouterr()
        assert main(["train", "--config", str(h.config(2)), "--resume", "--no-progress"]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and "step-0000002" in skipped[0] and "state.json" in skipped[0], captured.err
    assert "trained 2 steps" in captured.out  # step 2 again, from step 1's checkpoint
    assert json.loads((run / "final" / "training.json").read_text())["steps"] == 2
    assert (run / "checkpoints" / "step-0000002" / "state.json").read_text() != "{not json"  # written anew


def test_engine_ray_without_ray_in_a_real_process(tmp_path):
    """`--engine ray` where Ray is not installed, as a user's shell runs it: a sitecustomize on
    PYTHONPATH makes `import ray` fail in the child process (Ray is installed here). One line, exit 2,
    nothing written, for curate and import-magicdata."""
    import subprocess

    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoRay())\n")
    work = tmp_path / "work"
    work.mkdir()
    write(work / "in.csv", "video,caption\nx.mp4,a\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    for argv in (["data", "curate", "in.csv", "--out", "cur", "--engine", "ray"],
                 ["data", "import-magicdata", str(magicdata(tmp_path)), "--out", "imp", "--engine", "ray"]):
        before = tree(work)
        done = subprocess.run([sys.executable, "-m", "magicmotion", *argv], cwd=work, env=env, capture_output=True,
                              text=True, timeout=120)
        err = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and "--engine ray needs Ray Data" in err[0], done.stderr
        assert tree(work) == before


@pytest.mark.parametrize("image", ["path", "pil", "array"])
def test_python_api_refuses_a_1x1_first_frame(image, tmp_path):
    """`generate(pipe, image, ...)` and the pipelines' `__call__` read the first frame through
    `prepare_conditions`: a 1x1 image in any form is refused with a message naming its size."""
    import numpy as np
    from PIL import Image

    from magicmotion.errors import PipelineError
    from magicmotion.pipelines.conditions import prepare_conditions
    from magicmotion.trajectory import load

    dot = {"path": write_image(tmp_path / "dot.png", 1, 1), "pil": Image.new("RGB", (1, 1)),
           "array": np.zeros((1, 1, 3), np.uint8)}[image]
    spec = load(REPO / "examples" / "trajectory.json")
    with pytest.raises(PipelineError, match=r"the first frame is 1x1; at least 16 pixels a side"):
        prepare_conditions(dot, spec, "box", (64, 64))
    ok = prepare_conditions(np.zeros((16, 16, 3), np.uint8), spec, "box", (64, 64))  # the smallest accepted
    assert ok.image.shape == (64, 64, 3)


def test_refused_bench_run_leaves_no_new_run_folder(tmp_path, bench, capsys):
    """Found by the fuzzer: a bench run refused at its first clip (a zero-byte video) left a new run
    folder holding only run.json; a run folder that holds finished clips stays, to be resumed."""
    broken = tmp_path / "bench"
    shutil.copytree(bench, broken)
    first_video(broken).write_bytes(b"")
    argv = ["bench", "run", str(broken), "--out", str(tmp_path / "run"), "--limit", "1", "--steps", "1",
            "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("magicmotion: error: ") and first_video(broken).name in err[-1]
    assert not (tmp_path / "run").exists()

