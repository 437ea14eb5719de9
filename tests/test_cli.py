"""The `magicmotion` command: --help/--version, `trajectory render | from-masks | preview`, and bad
input: one line naming the problem, exit 2, no output file. Internal errors exit 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import magicmotion
import magicmotion.trajectory
from magicmotion.cli import main
from magicmotion.io import read_image, read_video, write_image, write_video
from magicmotion.trajectory import PALETTE, encode_mask, load, render

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "version": 1, "width": 48, "height": 32, "num_frames": 9, "caption": "two squares",
    "objects": [
        {"id": 1, "label": "a", "boxes": {"0": [2, 4, 12, 14], "8": [30, 4, 40, 14]},
         "masks": {"0": "mask_a.png"}},
        {"id": 2, "label": "b",
         "boxes": {"0": [20, 18, 30, 30], "4": [22, 10, 32, 22], "8": [24, 2, 34, 14]}},
    ],
}


@pytest.fixture
def workdir(tmp_path):
    """tmp_path with spec.json (+ its mask PNG) and first.png (the first frame, 48x32)."""
    mask = np.zeros((32, 48), np.uint8)
    mask[5:13, 3:11] = 255
    Image.fromarray(mask).save(tmp_path / "mask_a.png")
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    image = np.full((32, 48, 3), 120, np.uint8)
    image[5:13, 3:11] = (250, 60, 60)
    write_image(tmp_path / "first.png", image)
    return tmp_path


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, --version, usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------- top level


def test_version_and_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"magicmotion {magicmotion.__version__}"
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "trajectory" in out
    code, out, _ = run(["trajectory", "--help"], capsys)
    assert code == 0 and all(c in out for c in ("render", "from-masks", "preview"))
    code, out, _ = run(["trajectory", "render", "--help"], capsys)
    assert code == 0 and "--keys" in out and "--size" in out
    code, out, _ = run(["trajectory"], capsys)  # no subcommand: help, usage error
    assert code == 2 and "render" in out


def test_entry_point_exit_codes(workdir):
    """The installed program, as a user runs it: 0 on success, 2 on bad input (one line)."""
    cmd = [sys.executable, "-m", "magicmotion"]
    done = subprocess.run(cmd + ["--version"], capture_output=True, text=True, cwd=workdir)
    assert done.returncode == 0 and magicmotion.__version__ in done.stdout
    done = subprocess.run(cmd + ["trajectory", "render", "spec.json", "--out", "m/"],
                          capture_output=True, text=True, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert len(listing(workdir / "m")) == 9
    (workdir / "bad.json").write_text("{")
    done = subprocess.run(cmd + ["trajectory", "render", "bad.json", "--out", "x.mp4"],
                          capture_output=True, text=True, cwd=workdir)
    assert done.returncode == 2
    assert done.stderr.startswith("magicmotion: error: bad.json: malformed JSON")
    assert done.stderr.count("\n") == 1 and not (workdir / "x.mp4").exists()


def test_internal_error_exits_1(workdir, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(magicmotion.trajectory, "render", broken)
    code, _, err = run(["trajectory", "render", workdir / "spec.json", "--out", workdir / "m.mp4"], capsys)
    assert code == 1
    assert "Traceback" in err and err.strip().endswith("magicmotion: internal error: RuntimeError: boom")
    assert not (workdir / "m.mp4").exists()


# ---------------------------------------------------------------------------------------- render


def test_render_png_frames(workdir, capsys):
    code, out, err = run(["trajectory", "render", workdir / "spec.json", "--kind", "box",
                          "--out", f"{workdir / 'maps'}/"], capsys)
    assert code == 0, err
    assert "9 frames, 48x32" in out
    assert listing(workdir / "maps") == [f"{i:05d}.png" for i in range(9)]
    frames, _ = read_video(workdir / "maps")
    np.testing.assert_array_equal(frames, render(load(workdir / "spec.json"), "box"))


def test_render_mp4_and_gif(workdir, capsys):
    code, _, err = run(["trajectory", "render", workdir / "spec.json", "--kind", "sparse_box",
                        "--out", workdir / "maps.mp4", "--fps", "10"], capsys)
    assert code == 0, err
    frames, fps = read_video(workdir / "maps.mp4")
    expected = render(load(workdir / "spec.json"), "sparse_box")
    assert frames.shape == expected.shape and fps == pytest.approx(10)
    # map videos are written lossless (was: mean |difference| < 3 and frame 1 below 40; measured 0)
    np.testing.assert_array_equal(frames, expected)
    assert frames[1].max() == 0  # a frame without key boxes stays black
    code, _, err = run(["trajectory", "render", workdir / "spec.json", "--out", workdir / "maps.gif"], capsys)
    assert code == 0, err
    with Image.open(workdir / "maps.gif") as im:
        assert im.size == (48, 32) and im.n_frames > 1


def test_render_size_and_keys(workdir, capsys):
    code, out, err = run(["trajectory", "render", workdir / "spec.json", "--kind", "box", "--size", "32x32",
                          "--out", f"{workdir / 'small'}/"], capsys)
    assert code == 0, err
    assert "32x32" in out
    frames, _ = read_video(workdir / "small")
    np.testing.assert_array_equal(frames, render(load(workdir / "spec.json"), "box", size=(32, 32)))

    code, _, err = run(["trajectory", "render", workdir / "spec.json", "--kind", "sparse_box", "--keys", "2",
                        "--out", f"{workdir / 'sparse'}/"], capsys)
    assert code == 0, err
    frames, _ = read_video(workdir / "sparse")
    assert [t for t in range(9) if frames[t].any()] == [0, 4, 8]

    for seed in (1, 1, 2):
        code, _, err = run(["trajectory", "render", workdir / "spec.json", "--kind", "sparse_box",
                            "--keys", "3", "--seed", seed, "--out", f"{workdir / f'r{seed}'}/"], capsys)
        assert code == 0, err
    keys = {s: [t for t, f in enumerate(read_video(workdir / f"r{s}")[0]) if f.any()] for s in (1, 2)}
    assert keys[1][0] == 0 and len(keys[1]) == 4 and len(keys[2]) == 4


def test_render_bundled_example(tmp_path, capsys):
    spec = ROOT / "examples" / "trajectory.json"
    for kind in ("box", "sparse_box"):
        code, _, err = run(["trajectory", "render", spec, "--kind", kind, "--out", tmp_path / f"{kind}.mp4"],
                           capsys)
        assert code == 0, err
    code, _, err = run(["trajectory", "preview", spec, "--image", ROOT / "examples" / "first_frame.png",
                        "--out", tmp_path / "p.png"], capsys)
    assert code == 0, err
    traj = load(spec)
    assert read_image(ROOT / "examples" / "first_frame.png").shape[:2] == (traj.height, traj.width)
    assert all(0 in o.masks for o in traj.objects)


# ---------------------------------------------------------------------------------------- from-masks


def test_from_masks(tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    for t in (0, 2):
        labels = np.zeros((20, 30), np.uint8)
        labels[2 + t:8 + t, 3:9] = 1
        labels[10:16, 18 - t:26 - t] = 6
        im = Image.fromarray(labels, "P")
        im.putpalette(PALETTE.tobytes())
        im.save(masks / f"{t:05d}.png")
    code, out, err = run(["trajectory", "from-masks", masks, "--out", tmp_path / "spec.json",
                          "--num-frames", 5, "--caption", "two things"], capsys)
    assert code == 0, err
    assert "2 objects (ids 1, 6), masks on 2 of 5 frames, the others filled (shift), 30x20" in out
    traj = load(tmp_path / "spec.json")
    assert traj.ids == [1, 6] and traj.num_frames == 5 and traj.caption == "two things"
    np.testing.assert_array_equal(traj.object(1).boxes[2], [3, 4, 9, 10])
    # frame 1: half way (a pixel down, a pixel left); frames 3, 4: held after the last annotation
    np.testing.assert_array_equal(traj.object(1).boxes[1], [3, 3, 9, 9])
    np.testing.assert_array_equal(traj.object(6).boxes[1], [17, 10, 25, 16])
    assert sorted(traj.object(6).masks) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(traj.object(6).mask(4), traj.object(6).mask(2))
    assert "5 frames" not in err  # 4k + 1: no note


def test_round_trip_through_the_cli(workdir, capsys):
    """spec (masks on every frame) -> render mask PNGs -> from-masks -> spec: the same trajectory."""
    spec = {"version": 1, "width": 48, "height": 32, "num_frames": 4, "objects": []}
    for oid, (x, y) in ((3, (4, 4)), (12, (20, 16))):
        masks = {}
        for t in range(4):
            m = np.zeros((32, 48), bool)
            m[y:y + 8, x + 5 * t:x + 5 * t + 10] = True
            masks[str(t)] = {"size": [32, 48], "counts": encode_mask(m)["counts"].decode()}
        spec["objects"].append({"id": oid, "masks": masks})
    (workdir / "dense.json").write_text(json.dumps(spec))
    assert run(["trajectory", "render", workdir / "dense.json", "--kind", "mask",
                "--out", f"{workdir / 'maps'}/"], capsys)[0] == 0
    assert run(["trajectory", "from-masks", workdir / "maps", "--out", workdir / "back.json"], capsys)[0] == 0
    back, dense = load(workdir / "back.json"), load(workdir / "dense.json")
    assert back.ids == [3, 12] and back.num_frames == 4
    for kind in ("mask", "box", "sparse_box"):
        np.testing.assert_array_equal(render(back, kind), render(dense, kind))


def test_from_masks_real_annotation(tmp_path, capsys):
    """The judo annotation: masks on frames 0, 5, 8, 13, each introducing an object, one PNG a pixel
    narrower (a warning); the frames between filled, so every kind renders."""
    folder = ROOT / ".." / "shared" / "data" / "real-samples" / "masks" / "judo"
    if not folder.is_dir():
        pytest.skip(f"real samples not found at {folder.resolve()}")
    code, out, err = run(["trajectory", "from-masks", folder, "--out", tmp_path / "judo.json",
                          "--num-frames", 16], capsys)
    assert code == 0, err
    assert err.startswith("magicmotion: warning: ") and "00005.png: size 853x480" in err
    assert "4 objects (ids 1, 2, 3, 4), masks on 4 of 16 frames, the others filled (shift), 854x480" in out
    assert "16 frames is not 4k + 1, as generation needs: rerun with --num-frames 17 (the last frame held), " \
           "or give generate --frames" in err
    code, _, err = run(["trajectory", "render", tmp_path / "judo.json", "--kind", "mask",
                        "--size", "426x240", "--out", f"{tmp_path / 'masks'}/"], capsys)
    assert code == 0, err
    frames, _ = read_video(tmp_path / "masks")
    assert frames.shape == (16, 240, 426, 3) and all(f.any() for f in frames)
    code, _, err = run(["trajectory", "from-masks", folder, "--out", tmp_path / "raw.json", "--fill", "none",
                        "--num-frames", 17], capsys)
    assert code == 0 and "4k + 1" not in err
    code, _, err = run(["trajectory", "render", tmp_path / "raw.json", "--kind", "mask",
                        "--out", tmp_path / "m.mp4"], capsys)
    assert code == 2 and "object 1 has none on frame 1" in err
    code, _, err = run(["trajectory", "render", tmp_path / "raw.json", "--kind", "sparse_box",
                        "--size", "426x240", "--out", f"{tmp_path / 'maps'}/"], capsys)
    assert code == 0, err
    frames, _ = read_video(tmp_path / "maps")
    assert frames.shape == (17, 240, 426, 3)
    assert [t for t in range(17) if frames[t].any()] == [0, 5, 8, 13]
    code, _, err = run(["trajectory", "from-masks", folder, "--out", tmp_path / "x.json", "--fill", "blur"], capsys)
    assert code == 2 and "--fill" in err and not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------------------------------- preview


def test_preview_png_gif_mp4(workdir, capsys):
    code, out, err = run(["trajectory", "preview", workdir / "spec.json", "--image", workdir / "first.png",
                          "--out", workdir / "overlay.png"], capsys)
    assert code == 0, err
    sheet = read_image(workdir / "overlay.png")
    assert sheet.shape == (2 * 3 * 32, 8 * 3 * 48, 3)  # 9 frames: 8 on the first row, small frames x3
    sheet = sheet[::3, ::3]
    first = read_image(workdir / "first.png")
    # frame 0: the filled mask blended over the image; elsewhere the image itself
    assert (sheet[0:4, 0:48] == first[0:4]).all()
    assert not (sheet[5:13, 3:11] == first[5:13, 3:11]).all()
    code, _, err = run(["trajectory", "preview", workdir / "spec.json", "--image", workdir / "first.png",
                        "--out", workdir / "overlay.gif", "--kind", "sparse_box"], capsys)
    assert code == 0, err
    with Image.open(workdir / "overlay.gif") as im:
        assert im.size == (48, 32) and im.n_frames > 1
    write_video(workdir / "clip.mp4", np.repeat(first[None], 12, axis=0))
    code, _, err = run(["trajectory", "preview", workdir / "spec.json", "--video", workdir / "clip.mp4",
                        "--out", workdir / "overlay.mp4"], capsys)
    assert code == 0, err
    assert read_video(workdir / "overlay.mp4")[0].shape == (9, 32, 48, 3)


def test_preview_rescales_image_and_trajectory_together(workdir, capsys):
    big = np.kron(read_image(workdir / "first.png"), np.ones((2, 2, 1), np.uint8))  # 96x64, same aspect
    write_image(workdir / "big.png", big)
    code, out, err = run(["trajectory", "preview", workdir / "spec.json", "--image", workdir / "big.png",
                          "--out", workdir / "a.png", "--size", "96x64"], capsys)
    assert code == 0, err
    sheet = read_image(workdir / "a.png")
    assert sheet.shape == (2 * 2 * 64, 8 * 2 * 96, 3)  # small frames enlarged x2
    code, _, err = run(["trajectory", "preview", workdir / "spec.json", "--image", workdir / "big.png",
                        "--out", workdir / "b.png"], capsys)
    assert code == 0, err
    assert read_image(workdir / "b.png").shape == (2 * 3 * 32, 8 * 3 * 48, 3)  # the spec's size by default (x3)


# ---------------------------------------------------------------------------------------- bad input


def spec_with(**changes):
    def make(d: Path) -> Path:
        data = json.loads(json.dumps(SPEC))
        for key, value in changes.items():
            if key.startswith("object_"):
                data["objects"][0][key[len("object_"):]] = value
            else:
                data[key] = value
        (d / "bad.json").write_text(json.dumps(data))
        return d / "bad.json"
    return make


def raw_spec(text):
    def make(d: Path) -> Path:
        (d / "bad.json").write_text(text)
        return d / "bad.json"
    return make


def small_png(d: Path) -> None:
    Image.fromarray(np.full((10, 20), 255, np.uint8)).save(d / "small.png")


def broken_png(d: Path) -> None:
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


# (name, how to make the spec, extra setup, extra arguments, regex of the message after "error: ")
BAD = [
    ("malformed JSON", raw_spec('{"version": 1,'), None, [], r"bad\.json: malformed JSON"),
    ("wrong version", spec_with(version=3), None, [], r"bad\.json: unsupported version 3"),
    ("missing width", spec_with(width=None), None, [], r"bad\.json: 'width' must be a positive integer"),
    ("missing num_frames", raw_spec('{"version": 1, "width": 4, "height": 4, "objects": []}'), None, [],
     r"bad\.json: missing 'num_frames'"),
    ("key frame outside", spec_with(object_boxes={"9": [1, 1, 4, 4]}), None, [],
     r"bad\.json: object 1: key frame 9 outside 0\.\.8"),
    ("key frame not an integer", spec_with(object_boxes={"x": [1, 1, 4, 4]}), None, [],
     r"bad\.json: object 1: key frame 'x' is not an integer"),
    ("x0 >= x1", spec_with(object_boxes={"3": [10, 1, 4, 4]}), None, [],
     r"bad\.json: object 1 frame 3: box \[10\.0, 1\.0, 4\.0, 4\.0\] must have"),
    ("box outside the frame", spec_with(object_boxes={"3": [10, 1, 49, 4]}), None, [],
     r"bad\.json: object 1 frame 3: box"),
    ("mask of the wrong size", spec_with(object_masks={"0": "small.png"}), small_png, [],
     r"bad\.json: object 1 frame 0: mask is 20x10, the trajectory is 48x32"),
    ("missing mask file", spec_with(object_masks={"0": "gone.png"}), None, [],
     r"bad\.json: object 1 frame 0: mask file .*gone\.png not found"),
    ("unreadable mask PNG", spec_with(object_masks={"2": "broken.png"}), broken_png, [],
     r"bad\.json: object 1 frame 2: mask .*broken\.png is not a readable image"),
    ("bad RLE", spec_with(object_masks={"0": {"size": [32, 48], "counts": "3"}}), None, [],
     r"bad\.json: object 1 frame 0: bad RLE"),
    ("duplicate ids", spec_with(object_id=2), None, [], r"bad\.json: duplicate object id 2"),
    ("non-positive id", spec_with(object_id=0), None, [],
     r"bad\.json: object id 0 must be a positive integer"),
    ("no objects", spec_with(objects=[]), None, [], r"bad\.json: no objects"),
    ("mask kind without every mask", spec_with(), None, ["--kind", "mask"],
     r"bad\.json: kind 'mask' needs a mask on every frame; object 1 has none on frame 1 \(and 7 more\)"),
    ("spec not found", lambda d: d / "none.json", None, [], r"none\.json: file not found"),
    ("keys with mask kind", spec_with(), None, ["--kind", "mask", "--keys", "2"], r"--keys and --seed"),
    ("keys out of range", spec_with(), None, ["--keys", "12"], r"num_keys must be 1\.\.9"),
]


@pytest.mark.parametrize("name, make, setup, extra, message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("out", ["maps.mp4", "maps/"])
def test_render_bad_input(workdir, capsys, name, make, setup, extra, message, out):
    if setup:
        setup(workdir)
    spec = make(workdir)
    before = listing(workdir)
    code, stdout, err = run(["trajectory", "render", spec, "--out", f"{workdir}/{out}", *extra], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("magicmotion: error: ")
    assert re.search(message, err), err
    assert listing(workdir) == before  # no output, no temporary file
    assert stdout == ""


@pytest.mark.parametrize("argv, message", [
    (["trajectory", "render", "{d}/spec.json", "--kind", "boxes", "--out", "{d}/m.mp4"],
     "invalid choice: 'boxes'"),
    (["trajectory", "render", "{d}/spec.json", "--size", "720by480", "--out", "{d}/m.mp4"],
     "size must be WIDTHxHEIGHT"),
    (["trajectory", "render", "{d}/spec.json", "--fps", "0", "--out", "{d}/m.mp4"],
     "must be a positive number"),
    (["trajectory", "render", "{d}/spec.json"], "the following arguments are required: --out"),
    (["trajectory", "preview", "{d}/spec.json", "--out", "{d}/p.png"],
     "one of the arguments --image --video"),
    (["trajectory", "wobble"], "invalid choice: 'wobble'"),
])
def test_usage_errors(workdir, capsys, argv, message):
    before = listing(workdir)
    code, _, err = run([a.format(d=workdir) for a in argv], capsys)
    assert code == 2 and message in err
    assert listing(workdir) == before


@pytest.mark.parametrize("argv, message", [
    (["trajectory", "render", "{d}/spec.json", "--out", "{d}/no/such/m.mp4"],
     r"m\.mp4: output folder .*no/such does not exist"),
    (["trajectory", "render", "{d}/spec.json", "--out", "{d}/no/such/frames/"],
     r"output folder .*no/such does not exist"),
    (["trajectory", "render", "{d}/spec.json", "--out", "{d}/maps.avi"], r"maps\.avi: unknown output type"),
    (["trajectory", "render", "{d}/spec.json", "--out", "{d}/first.png/"], r"first\.png: is a file"),
    (["trajectory", "from-masks", "{d}", "--out", "{d}/no/spec.json"], r"output folder .*no does not exist"),
    (["trajectory", "from-masks", "{d}/none", "--out", "{d}/spec2.json"], r"none: not a folder of mask PNGs"),
    (["trajectory", "from-masks", "{d}", "--out", "{d}/spec2.txt"],
     r"spec2\.txt: unknown output type: use \.json"),
    (["trajectory", "preview", "{d}/spec.json", "--image", "{d}/first.png", "--out", "{d}/no/p.png"],
     r"output folder .*no does not exist"),
    (["trajectory", "preview", "{d}/spec.json", "--image", "{d}/first.png", "--out", "{d}/p.txt"],
     r"p\.txt: unknown output type"),
    (["trajectory", "preview", "{d}/spec.json", "--image", "{d}/spec.json", "--out", "{d}/p.png"],
     r"spec\.json: unreadable image"),
    (["trajectory", "preview", "{d}/spec.json", "--image", "{d}/nope.png", "--out", "{d}/p.png"],
     r"nope\.png: image not found"),
    (["trajectory", "preview", "{d}/spec.json", "--video", "{d}/first.png.mp4", "--out", "{d}/p.png"],
     r"first\.png\.mp4: unreadable video"),
    (["trajectory", "preview", "{d}/spec.json", "--image", "{d}/first.png", "--kind", "mask",
      "--out", "{d}/p.gif"], r"kind 'mask' needs a mask on every frame"),
])
def test_bad_media_and_outputs(workdir, capsys, argv, message):
    (workdir / "first.png.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    before = listing(workdir)
    code, _, err = run([a.format(d=workdir) for a in argv], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("magicmotion: error: ")
    assert re.search(message, err), err
    assert listing(workdir) == before


def test_verbose_is_taken_anywhere_on_every_command():
    """Issue 38: `--verbose` (every library bar and message) before or after any (sub)command."""
    from magicmotion.cli import add_verbose, build_parser

    parser = build_parser()
    add_verbose(parser)
    for argv, verbose in ((["--verbose", "demo"], True), (["demo", "--verbose"], True), (["demo"], False),
                          (["trajectory", "render", "x.json", "--kind", "box", "--out", "y", "--verbose"], True),
                          (["train", "precompute", "--config", "c.yaml", "--verbose"], True)):
        assert getattr(parser.parse_args(argv), "verbose", False) is verbose, argv
