"""The dataset layout: the writer appends clips safely, the reader returns what the writer wrote,
sampled and resized with the trajectory aligned, and errors name the clip."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from magicmotion.cli import main
from magicmotion.data.dataset import DatasetWriter, read_index, write_index
from magicmotion.data.info import dataset_info, write_info_plot
from magicmotion.data.reader import Dataset, slice_frames
from magicmotion.errors import DatasetError
from magicmotion.io import read_image
from magicmotion.trajectory import (Trajectory, from_label_masks, from_mask_frames, load, rescale,
                                    resize_crop)

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real-samples"


def make_clip(t=8, w=40, h=32):
    """Frames whose grey level encodes the frame number (20 + 20 t) with two moving squares, and
    their trajectory (masks from the label images)."""
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    labels = np.zeros((t, h, w), dtype=np.int32)
    for f in range(t):
        frames[f] = 20 + (200 * f) // max(t - 1, 1)
        x = 2 + (24 * f) // max(t - 1, 1)
        labels[f, 4:12, x:x + 8] = 1
        labels[f, 20:26, 30 - f:36 - f] = 2
    frames[labels == 1] = (250, 30, 30)
    frames[labels == 2] = (30, 30, 250)
    traj = from_label_masks(labels, labels_by_id={1: "red square", 2: "blue square"})
    return frames, labels, traj


def frame_number(frame, t):
    """Recover the frame number from the grey level of the bottom-left corner."""
    level = float(np.median(frame[-4:, :4, 1]))
    return int(round((level - 20) * max(t - 1, 1) / 200))


def new_dataset(root, clips=1, t=8, **extra):
    writer = DatasetWriter(root)
    frames, labels, traj = make_clip(t)
    for i in range(clips):
        writer.add(f"clip{i}", frames, traj, f"two squares {i}", fps=10.0, **extra)
    return writer, frames, labels, traj


# ------------------------------------------------------------------------------------ round trip


def test_reader_returns_what_the_writer_wrote(tmp_path):
    root = tmp_path / "ds"
    writer, frames, labels, traj = new_dataset(root, clips=2)
    assert (root / "index.jsonl").is_file() and (root / "videos" / "clip0.mp4").is_file()
    ds = Dataset(root, sampling="start")
    assert len(ds) == 2
    clip = ds[1]
    assert clip.id == "clip1" and clip.caption == "two squares 1" and clip.fps == 10.0
    assert clip.frames.shape == frames.shape and clip.frames.dtype == np.uint8
    # H.264's loss: measured 2.84 levels on average; the frames one step late (off by one), 30.6
    assert np.abs(clip.frames.astype(int) - frames).mean() < 3
    assert np.abs(clip.frames[1:].astype(int) - frames[:-1]).mean() > 3
    assert clip.frame_indices == list(range(8))
    assert clip.trajectory.caption == "two squares 1"
    assert clip.trajectory.ids == [1, 2]
    assert clip.trajectory.object(1).label == "red square"
    for o in traj.objects:
        got = clip.trajectory.object(o.id)
        for t in range(8):
            np.testing.assert_array_equal(got.mask(t), labels[t] == o.id)
            np.testing.assert_array_equal(got.boxes[t], o.boxes[t])
    # the annotation is a trajectory spec with the caption
    spec = load(root / "annotations" / "clip1.json")
    assert spec.caption == "two squares 1" and spec.num_frames == 8
    with pytest.raises(IndexError):
        ds[2]


def test_index_records(tmp_path):
    root = tmp_path / "ds"
    writer = DatasetWriter(root)
    frames, _, traj = make_clip()
    rec = writer.add("a-1", frames, traj, "cap", fps=12, split="test", motion=np.float32(0.25), tag="x")
    assert rec == {"id": "a-1", "video": "videos/a-1.mp4", "annotation": "annotations/a-1.json",
                   "caption": "cap", "num_frames": 8, "fps": 12.0, "width": 40, "height": 32,
                   "num_objects": 2, "split": "test", "motion": 0.25, "tag": "x"}
    assert read_index(root) == [rec]
    lines = (root / "index.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == rec
    with pytest.raises(DatasetError, match="clash"):
        writer.add("a-2", frames, traj, "cap", width=3)
    with pytest.raises(DatasetError, match="a-3: extra fields"):
        writer.add("a-3", frames, traj, "cap", score=object())
    assert [r["id"] for r in read_index(root)] == ["a-1"]


def test_ids_must_be_new_and_safe(tmp_path):
    writer, frames, _, traj = new_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="clip clip0 is already in the dataset"):
        writer.add("clip0", frames, traj, "again")
    # another writer on the same folder knows the ids too
    with pytest.raises(DatasetError, match="already in the dataset"):
        DatasetWriter(tmp_path / "ds").add("clip0", frames, traj, "again")
    for bad in ["../x", "a/b", ".hidden", "", "a b", "x" * 200, 3]:
        with pytest.raises(DatasetError, match="not a safe file name"):
            writer.add(bad, frames, traj, "c")
    assert len(read_index(tmp_path / "ds")) == 1


def test_writer_checks_the_trajectory_names_clip_object_frame(tmp_path):
    writer = DatasetWriter(tmp_path / "ds")
    frames, labels, traj = make_clip()
    bad = traj.copy()
    del bad.object(2).masks[5]
    with pytest.raises(DatasetError, match="clip c1: object 2 frame 5: no mask"):
        writer.add("c1", frames, bad, "x")
    bad = traj.copy()
    del bad.object(1).boxes[3]
    with pytest.raises(DatasetError, match="clip c1: object 1 frame 3: no box"):
        writer.add("c1", frames, bad, "x")
    with pytest.raises(DatasetError,
                       match="clip c1: the trajectory is 40x32 with 8 frames, the video 40x32 with 7"):
        writer.add("c1", frames[:7], traj, "x")
    with pytest.raises(DatasetError, match="clip c1: frames must be uint8"):
        writer.add("c1", frames.astype(np.float32), traj, "x")
    with pytest.raises(DatasetError, match="clip c1: the trajectory has no objects"):
        writer.add("c1", frames, Trajectory(40, 32, 8), "x")
    assert read_index(tmp_path / "ds") == []
    assert list((tmp_path / "ds" / "videos").iterdir()) == []


# ------------------------------------------------------------------------------------ crash safety


def test_a_crash_while_writing_leaves_no_clip(tmp_path, monkeypatch):
    import magicmotion.io

    root = tmp_path / "ds"
    writer, frames, _, traj = new_dataset(root)
    real_write = magicmotion.io.write_video

    def crash(path, *a, **k):
        Path(path).write_bytes(b"half a video")
        raise RuntimeError("power cut")

    monkeypatch.setattr(magicmotion.io, "write_video", crash)
    with pytest.raises(RuntimeError):
        writer.add("c2", frames, traj, "x")
    monkeypatch.setattr(magicmotion.io, "write_video", real_write)
    assert [r["id"] for r in read_index(root)] == ["clip0"]
    assert sorted(p.name for p in (root / "videos").iterdir()) == ["clip0.mp4"]
    assert sorted(p.name for p in (root / "annotations").iterdir()) == ["clip0.json"]
    writer.add("c2", frames, traj, "x")  # the id is free
    assert len(Dataset(root)) == 2


def test_a_crash_before_the_index_line_hides_the_clip(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    writer, frames, _, traj = new_dataset(root)

    def crash(self, line):
        raise RuntimeError("killed")

    monkeypatch.setattr(DatasetWriter, "_append", crash)
    with pytest.raises(RuntimeError):
        writer.add("c2", frames, traj, "x")
    monkeypatch.undo()
    assert (root / "videos" / "c2.mp4").is_file()  # whole files, but no index line
    assert [r["id"] for r in read_index(root)] == ["clip0"]
    writer.add("c2", frames, traj, "second try")
    assert [r["caption"] for r in read_index(root)] == ["two squares 0", "second try"]


def test_an_unfinished_index_line_is_named_then_repaired(tmp_path):
    root = tmp_path / "ds"
    _, frames, _, traj = new_dataset(root, clips=2)
    with open(root / "index.jsonl", "ab") as f:
        f.write(b'{"id": "clip9", "vid')
    with pytest.raises(DatasetError, match=r"index.jsonl:3: malformed index line .*unfinished"):
        read_index(root)
    DatasetWriter(root).add("clip3", frames, traj, "x")
    assert [r["id"] for r in read_index(root)] == ["clip0", "clip1", "clip3"]
    # a whole record that only lacks its newline is kept
    text = (root / "index.jsonl").read_bytes()
    (root / "index.jsonl").write_bytes(text.rstrip(b"\n"))
    DatasetWriter(root).add("clip4", frames, traj, "x")
    assert [r["id"] for r in read_index(root)] == ["clip0", "clip1", "clip3", "clip4"]


@pytest.mark.slow
def test_a_killed_writer_leaves_a_readable_dataset(tmp_path):
    root = tmp_path / "ds"
    code = ("import sys; from magicmotion.data.synthetic import synthesize; "
            "synthesize(sys.argv[1], 1000, frames=9, size=(32, 32), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            index = root / "index.jsonl"
            if index.is_file() and index.read_bytes().count(b"\n") >= 5:
                break
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    records = read_index(root)
    assert 5 <= len(records) < 1000
    ds = Dataset(root, sampling="start")
    for i in range(len(ds)):
        assert ds[i].frames.shape == (9, 32, 32, 3)
    # a re-run completes the dataset
    from magicmotion.data.synthetic import synthesize

    written = synthesize(root, len(records) + 2, frames=9, size=(32, 32), progress=False)
    assert len(written) == 2 and len(read_index(root)) == len(records) + 2


def _write_many(root, worker, n):
    frames, _, traj = make_clip(t=4)
    writer = DatasetWriter(root)
    for i in range(n):
        writer.add(f"w{worker}-{i}", frames[:4], slice_frames(traj, range(4)), f"w{worker}")
    try:
        writer.add("shared", frames[:4], slice_frames(traj, range(4)), f"w{worker}")
    except DatasetError:
        pass


def test_several_processes_write_one_dataset(tmp_path):
    root = tmp_path / "ds"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(root, w, 4)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    ids = [r["id"] for r in read_index(root)]
    assert sorted(ids) == sorted([f"w{w}-{i}" for w in range(2) for i in range(4)] + ["shared"])
    assert len(Dataset(root)) == 9


# ------------------------------------------------------------------------------------ index errors


def test_read_index_errors_name_line_and_clip(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        read_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="index.jsonl: index not found"):
        read_index(tmp_path / "empty")
    root = tmp_path / "ds"
    new_dataset(root, clips=2)
    good = (root / "index.jsonl").read_text().splitlines()
    rec = json.loads(good[1])

    def check(line, pattern):
        (root / "index.jsonl").write_text(good[0] + "\n\n" + line + "\n")
        with pytest.raises(DatasetError, match=pattern):
            read_index(root)

    check("{not json", r"index.jsonl:3: malformed index line")
    check("[1, 2]", r"index.jsonl:3: a record must be a JSON object")
    no_fps = {k: v for k, v in rec.items() if k != "fps"}
    check(json.dumps(no_fps), r":3: clip clip1: missing field 'fps'")
    check(json.dumps({**rec, "num_frames": "8"}), r":3: clip clip1: field 'num_frames' has a bad value")
    check(json.dumps({**rec, "width": 0}), r":3: clip clip1: field 'width' must be > 0")
    check(json.dumps({**rec, "id": "../x"}), r":3: clip id '../x' is not a safe file name")
    check(json.dumps({**rec, "video": "../../etc/passwd"}),
          r":3: clip clip1: 'video' must be a path inside")
    check(json.dumps({**rec, "id": "clip0"}), r":3: clip clip0 repeats line 1")
    (root / "index.jsonl").write_text(good[0] + "\n\n" + good[1] + "\n")
    assert [r["id"] for r in read_index(root)] == ["clip0", "clip1"]  # blank lines are fine


def test_write_index_adds_scores_atomically(tmp_path):
    root = tmp_path / "ds"
    writer, frames, _, traj = new_dataset(root, clips=2)
    records = read_index(root)
    for i, r in enumerate(records):
        r["motion_score"] = 0.5 + i
    write_index(root, records)
    assert [r["motion_score"] for r in read_index(root)] == [0.5, 1.5]
    assert sorted(p.name for p in root.iterdir()) == [".lock", "annotations", "index.jsonl", "videos"]
    # a live writer sees the rewritten index
    with pytest.raises(DatasetError, match="already in the dataset"):
        writer.add("clip1", frames, traj, "x")
    writer.add("clip2", frames, traj, "x")
    assert [r.get("motion_score") for r in read_index(root)] == [0.5, 1.5, None]
    with pytest.raises(DatasetError, match="clip clip0 appears twice"):
        write_index(root, [records[0], records[0]])
    with pytest.raises(DatasetError, match="record 0: clip clip0: missing field 'caption'"):
        write_index(root, [{k: v for k, v in records[0].items() if k != "caption"}])
    assert len(read_index(root)) == 3


# ------------------------------------------------------------------------------------ reader errors


def test_missing_or_broken_files_name_the_clip(tmp_path):
    root = tmp_path / "ds"
    new_dataset(root, clips=4)
    (root / "videos" / "clip0.mp4").unlink()
    (root / "annotations" / "clip1.json").unlink()
    (root / "annotations" / "clip2.json").write_text('{"version": 1, "width": ')
    (root / "videos" / "clip3.mp4").write_bytes(b"\x00" * 100)
    ds = Dataset(root)
    with pytest.raises(DatasetError, match=r"clip clip0: video .*clip0.mp4 not found"):
        ds[0]
    with pytest.raises(DatasetError, match=r"clip clip1: annotation .*clip1.json not found"):
        ds[1]
    with pytest.raises(DatasetError, match=r"clip clip2: bad annotation: .*malformed JSON"):
        ds[2]
    with pytest.raises(DatasetError, match=r"clip clip3: .*clip3.mp4: unreadable video"):
        ds[3]
    with pytest.raises(DatasetError, match=r"clip clip0: video .*clip0.mp4 not found"):
        dataset_info(root)


def test_annotation_that_disagrees_with_the_index(tmp_path):
    root = tmp_path / "ds"
    new_dataset(root)
    records = read_index(root)
    records[0]["num_frames"] = 9
    write_index(root, records)
    with pytest.raises(DatasetError, match="clip clip0: annotation .* 40x32 with 8 frames; "
                                           "the index says 40x32 with 9"):
        Dataset(root)[0]


# ------------------------------------------------------------------------------------ sampling


def test_slice_frames():
    _, labels, traj = make_clip()
    out = slice_frames(traj, [5, 1, 1])
    assert out.num_frames == 3 and (out.width, out.height) == (40, 32)
    for j, t in enumerate([5, 1, 1]):
        for o in out.objects:
            np.testing.assert_array_equal(o.mask(j), labels[t] == o.id)
            np.testing.assert_array_equal(o.boxes[j], traj.object(o.id).boxes[t])
    assert out.object(1).label == "red square"
    with pytest.raises(DatasetError, match="frame 8 outside 0..7"):
        slice_frames(traj, [0, 8])


@pytest.mark.parametrize("sampling, start", [("start", 0), ("center", 2)])
def test_fixed_sampling_at_a_stride(tmp_path, sampling, start):
    root = tmp_path / "ds"
    _, _, _, traj = new_dataset(root, t=12)
    clip = Dataset(root, num_frames=4, stride=2, sampling=sampling)[0]
    want = [start + 2 * j for j in range(4)]
    assert clip.frame_indices == want
    assert [frame_number(f, 12) for f in clip.frames] == want
    assert clip.fps == 5.0 and clip.trajectory.num_frames == 4
    for j, t in enumerate(want):
        for o in traj.objects:
            np.testing.assert_array_equal(clip.trajectory.object(o.id).boxes[j], o.boxes[t])


def test_random_sampling_is_seeded_per_epoch(tmp_path):
    root = tmp_path / "ds"
    new_dataset(root, t=12)
    ds = Dataset(root, num_frames=3, stride=3, sampling="random", seed=5)
    starts = []
    for epoch in range(12):
        ds.set_epoch(epoch)
        clip = ds[0]
        idx = clip.frame_indices
        assert np.diff(idx).tolist() == [3, 3] and 0 <= idx[0] <= 12 - 7
        assert [frame_number(f, 12) for f in clip.frames] == idx
        starts.append(idx[0])
    assert len(set(starts)) >= 3
    again = Dataset(root, num_frames=3, stride=3, sampling="random", seed=5)
    again.set_epoch(4)
    assert again[0].frame_indices == [starts[4] + 3 * j for j in range(3)]


def test_short_clips_raise_unless_padded(tmp_path):
    root = tmp_path / "ds"
    new_dataset(root, t=12)
    with pytest.raises(DatasetError, match="clip clip0 has 12 frames, fewer than 10 at stride 2 need"):
        Dataset(root, num_frames=10, stride=2)[0]
    clip = Dataset(root, num_frames=10, stride=2, pad=True)[0]
    assert clip.frame_indices == [0, 2, 4, 6, 8, 10, 11, 11, 11, 11]
    assert [frame_number(f, 12) for f in clip.frames] == clip.frame_indices
    assert clip.trajectory.num_frames == 10


def test_resize_and_crop_keep_frames_and_trajectory_aligned(tmp_path):
    root = tmp_path / "ds"
    _, frames, labels, traj = new_dataset(root)
    clip = Dataset(root, size=(20, 20), sampling="start")[0]
    assert clip.frames.shape == (8, 20, 20, 3)
    assert clip.trajectory.size == (20, 20)
    want = rescale(traj, (20, 20))
    for o in want.objects:
        for t in range(8):
            m = clip.trajectory.object(o.id).mask(t)
            np.testing.assert_array_equal(m, o.mask(t))
            np.testing.assert_allclose(clip.trajectory.object(o.id).boxes[t], o.boxes[t])
    # the red object's mask covers red pixels in the resized frames
    red = np.stack([clip.trajectory.object(1).mask(t) for t in range(8)])
    px = clip.frames[red].astype(int)
    assert px[:, 0].mean() > 180 and px[:, 2].mean() < 90
    # H.264 + resize: measured 2.35; one step late, 30.2
    assert np.abs(clip.frames.astype(int) - resize_crop(frames, (20, 20))).mean() < 4
    assert np.abs(clip.frames[1:].astype(int) - resize_crop(frames, (20, 20))[:-1]).mean() > 4


def test_split_filter_and_bad_options(tmp_path):
    root = tmp_path / "ds"
    writer, frames, _, traj = new_dataset(root, clips=2)
    writer.add("t0", frames, traj, "test clip", split="test")
    assert [r["id"] for r in Dataset(root, split="test").records] == ["t0"]
    assert len(Dataset(root, split="train")) == 2
    with pytest.raises(DatasetError, match="unknown sampling"):
        Dataset(root, sampling="middle")
    with pytest.raises(DatasetError, match="stride must be >= 1"):
        Dataset(root, stride=0)


# ------------------------------------------------------------------------------------ info


def test_info_counts_and_plot(tmp_path, capsys):
    root = tmp_path / "ds"
    writer, frames, _, traj = new_dataset(root, clips=3)
    one = traj.copy()
    one.objects = one.objects[:1]
    writer.add("one", frames[:5], slice_frames(one, range(5)), "one square", split="test", fps=5)
    info = dataset_info(root)
    assert info["num_clips"] == 4
    assert info["splits"] == {"train": 3, "test": 1}
    assert info["objects_per_clip"] == {"1": 1, "2": 3}
    assert info["num_objects"] == {"min": 1, "max": 2, "mean": 1.75, "total": 7}
    assert info["num_frames"] == {"min": 5, "max": 8, "mean": 7.25, "total": 29}
    assert info["sizes"] == {"40x32": 4}
    assert info["fps"] == {"10.0": 3, "5.0": 1}
    png = write_info_plot(info, tmp_path / "hist.png")
    image = read_image(png)
    assert image.shape[0] > 100 and image.std() > 10
    assert main(["data", "info", str(root), "--plot", str(tmp_path / "h2.png"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "clips: 4 (train: 3, test: 1)" in out and "[1: 1, 2: 3]" in out
    assert (tmp_path / "h2.png").is_file()
    (root / "annotations" / "one.json").unlink()
    assert main(["data", "info", str(root)]) == 2
    assert "clip one: annotation" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ real data


def test_real_frames_with_masks_only_on_frame_0(tmp_path):
    if not REAL.is_dir():
        pytest.skip(f"real samples not found at {REAL} (they live beside the repository)")
    images = sorted((REAL / "images" / "bike").glob("*.jpg"))
    frames = resize_crop(np.stack([read_image(p) for p in images]), (214, 120))
    traj = rescale(from_mask_frames(REAL / "masks" / "bike", num_frames=len(images), fill="none"), (214, 120))
    writer = DatasetWriter(tmp_path / "ds")
    with pytest.raises(DatasetError, match="clip bike: object 1 frame 1: no mask"):
        writer.add("bike", frames, traj, "a person riding a bike")
    # the frame-0 labels on every frame make a valid clip
    label0 = np.zeros((120, 214), dtype=np.int32)
    for o in traj.objects:
        label0[o.mask(0)] = o.id
    dense = from_label_masks(np.repeat(label0[None], len(images), axis=0), "a person riding a bike")
    writer.add("bike", frames, dense, "a person riding a bike", fps=25)
    clip = Dataset(tmp_path / "ds", size=(64, 48), sampling="start")[0]
    assert clip.frames.shape == (4, 48, 64, 3)
    assert clip.trajectory.ids == [1, 2]
    assert np.abs(clip.frames.astype(int) - resize_crop(frames, (64, 48)).astype(int)).mean() < 6  # measured 3.1
    want = rescale(dense, (64, 48))
    for o in want.objects:
        np.testing.assert_array_equal(clip.trajectory.object(o.id).mask(3), o.mask(3))
        assert o.mask(3).sum() > 20
