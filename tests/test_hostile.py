"""Hostile inputs through every CLI entry point: each row builds its bad input in code (decompression
bombs, deep JSON, huge integers, NaN, absurd sizes, broken datasets, odd outputs) and the command must
answer exit 2 with one line naming the file, and leave nothing new on disk. A new command joins by
adding a row. See docs/limits.md for the limits."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from magicmotion.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = REPO / "src" / "magicmotion" / "assets" / "tiny" / "base"
FIRST_FRAME = REPO / "examples" / "first_frame.png"

# ---------------------------------------------------------------------------------------- the corpus


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height (a decompression bomb as far as any reader can tell)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


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
    ("train lambda_seg .nan", lambda t, d, b: ["train", "--config", str(config(t, d, "lambda_seg: .nan"))], "lambda_seg"),
    ("train flow_shift .nan", lambda t, d, b: ["train", "--config", str(config(t, d, "noise: {flow_shift: .nan}"))],
     "flow_shift"),
    ("train max_steps .inf", lambda t, d, b: ["train", "--config", str(config(t, d, "loop: {max_steps: .inf}"))],
     "max_steps"),
    ("train seed 2^64", lambda t, d, b: ["train", "--config", str(config(t, d, f"seed: {2**64}"))], "seed"),
    ("train seed -1", lambda t, d, b: ["train", "--config", str(config(t, d, "seed: -1"))], "seed"),
    ("train size 40000", lambda t, d, b: ["train", "--config", str(config(t, d, "data: {dataset: x, size: [40000, 4000]}"))],
     "c.yaml"),
    ("train output_dir a file", lambda t, d, b: ["train", "--config", str(config(t, d, output_dir=write(t / "f", "x")))],
     "output_dir"),
    ("train evil base", lambda t, d, b: ["train", "--config", str(config(t, d, base=evil_base(t)))], "mm_evil"),
    ("precompute --out a file", lambda t, d, b: ["train", "precompute", "--config", str(config(t, d)), "--out",
                                                 str(write(t / "f", "x"))], "f: is a file"),
    # bench: odd outputs and settings checked before folders are made, broken datasets before writing
    ("bench run --out a file", lambda t, d, b: ["bench", "run", str(b), "--out", str(write(t / "f", "x"))], "f"),
    ("bench run --steps 0", lambda t, d, b: ["bench", "run", str(b), "--out", str(t / "r"), "--steps", "0"], "steps"),
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
    ("bench build: NaN fps", lambda t, d, b: bench_build(broken_dataset(t, d, lambda r: edit_index(r, fps=float("nan")))),
     "index.jsonl"),
    ("bench build: frames disagree", lambda t, d, b: bench_build(broken_dataset(
        t, d, lambda r: edit_index(r, num_frames=40))), "clip"),
    # curation inputs
    ("curate CSV not UTF-8", lambda t, d, b: ["data", "curate", str(t / "in.csv"), "--out", str(t / "cur")]
     if (t / "in.csv").write_bytes(b"video,caption\n\xff\xfe,x\n") else None, "in.csv"),
]


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("build, names", [pytest.param(b, n, id=i) for i, b, n in CASES])
def test_hostile_input_is_one_line_and_exit_2(build, names, tmp_path, dataset, bench, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # where an `mm_evil` module would be found
    (tmp_path / "mm_evil.py").write_text("open(__file__ + '.ran', 'w').close()\n")
    argv = build(tmp_path, dataset, bench)
    capsys.readouterr()
    before, bench_before = tree(tmp_path), tree(bench)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("magicmotion: error: ") and names in err[0], err
    assert tree(tmp_path) == before, "the command left files behind"
    assert tree(bench) == bench_before
    assert not (tmp_path / "mm_evil.py.ran").exists()
