"""Filtering: each filter's score and verdict, the kept subset, the report and the histograms."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from magicmotion.data.dataset import DatasetWriter, read_index
from magicmotion.data.filtering import (DEFAULTS, FILTERS, evaluate, filter_dataset,
                                        load_filter_config, motion_scores)
from magicmotion.data.synthetic import SyntheticWorld
from magicmotion.errors import ConfigError, DatasetError
from magicmotion.trajectory import from_label_masks

ROOT = Path(__file__).resolve().parents[2]
T, W, H = 12, 64, 64


def _moving(seed: int):
    world = SyntheticWorld(size=(W, H), num_frames=T, min_objects=1, max_objects=2, pan_prob=0.0,
                           speed=(1.2, 1.8))
    frames, labels, caption, _ = world.sample(np.random.default_rng(seed))
    return frames, labels, caption


def _static():
    frames, labels, caption = _moving(0)
    return np.repeat(frames[:1], T, axis=0), np.repeat(labels[:1], T, axis=0), caption


def _shaky():
    """A clip whose whole frame jumps a few pixels in a random direction every frame."""
    frames, labels, caption = _moving(1)
    pad = 8
    f = np.pad(frames[0], ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    lab = np.pad(labels[0], pad)
    shifts = np.random.default_rng(0).integers(-4, 5, (T, 2))
    return (np.stack([f[pad + dy:pad + dy + H, pad + dx:pad + dx + W] for dx, dy in shifts]),
            np.stack([lab[pad + dy:pad + dy + H, pad + dx:pad + dx + W] for dx, dy in shifts]), caption)


def _boxes_clip(boxes: list[tuple[int, int, int, int]], lost_from: dict | None = None, moving=True):
    """A clip of squares at the given (x0, y0, x1, y1) moving right by 1 px per frame; object k
    (1-based) disappears from frame lost_from[k] on."""
    rng = np.random.default_rng(len(boxes))
    frames = np.repeat(rng.integers(60, 120, (1, H, W, 3), dtype=np.uint8), T, axis=0)
    labels = np.zeros((T, H, W), dtype=np.int32)
    for t in range(T):
        for k, (x0, y0, x1, y1) in enumerate(boxes, start=1):
            if lost_from and t >= lost_from.get(k, T):
                continue
            dx = t if moving else 0
            labels[t, y0:y1, min(x0 + dx, W - 1):min(x1 + dx, W)] = k
            frames[t, y0:y1, min(x0 + dx, W - 1):min(x1 + dx, W)] = (40 * k) % 255
    return frames, labels, "squares"


@pytest.fixture
def make_dataset(tmp_path):
    def make(clips: dict, name: str = "ds", fps: float = 8.0) -> Path:
        root = tmp_path / name
        writer = DatasetWriter(root)
        for cid, (frames, labels, caption) in clips.items():
            writer.add(cid, frames, from_label_masks(labels, caption), caption, fps=fps)
        return root

    return make


def _only(*names, **settings) -> dict:
    overrides = {f: {"enabled": f in names} for f in FILTERS}
    for f, values in settings.items():
        overrides[f].update(values)
    return load_filter_config(overrides=overrides)


def _verdicts(root: Path) -> dict:
    return {r["id"]: r["filters"] for r in read_index(root)}


def test_motion_filter_keeps_moving_clips_and_drops_static_and_shaky(make_dataset, tmp_path):
    root = make_dataset({"move-a": _moving(2), "move-b": _moving(3), "static": _static(),
                         "shaky": _shaky()})
    report = filter_dataset(root, _only("motion"), tmp_path / "kept", progress=False)
    assert [r["id"] for r in read_index(tmp_path / "kept")] == ["move-a", "move-b"]
    v = _verdicts(root)  # scores are saved in the source index
    assert v["static"]["motion"]["score"] < DEFAULTS["motion"]["min"]
    assert v["static"]["motion"]["reason"].startswith("too still")
    assert v["shaky"]["motion"]["reason"].startswith("too shaky")
    assert v["shaky"]["motion"]["shake"] > 5 * max(v["move-a"]["motion"]["shake"], 0.1)
    for cid in ("move-a", "move-b"):
        assert v[cid]["motion"]["pass"] and v[cid]["motion"]["reason"] is None
        assert v[cid]["motion"]["score"] > DEFAULTS["motion"]["min"]
    assert report.removed == {"motion": 2} and (report.total, report.kept) == (4, 2)


def test_motion_scores_measure_shifts():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (40, 80), dtype=np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (7, 7), 2)
    frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(6)])[..., None].repeat(3, -1)
    m = motion_scores(frames, size=128)
    # optical flow of a 2 px pan: measured 2.5016 for 2.5 (0.06%; was rel=0.15, 0.02 leaves room for
    # other OpenCV versions' flow); the wrong speed, 3 px per frame (3.75), must fail it
    assert m["score"] == pytest.approx(2 / 80 * 100, rel=0.02)  # 2 px per frame of 80 px
    faster = np.stack([np.roll(base, 3 * t, axis=1) for t in range(6)])[..., None].repeat(3, -1)
    assert motion_scores(faster, size=128)["score"] != pytest.approx(2 / 80 * 100, rel=0.02)
    assert m["shake"] < 0.2  # a steady pan does not shake: measured 6e-7; max_shake's default is 2.0
    assert motion_scores(frames[:1]) == {"score": 0.0, "shake": 0.0}


def test_area_and_count_filters(make_dataset, tmp_path):
    seven = [(2 + 9 * k, 2, 8 + 9 * k, 10) for k in range(7)]
    root = make_dataset({
        "normal": _boxes_clip([(4, 4, 20, 20), (30, 30, 44, 50)]),
        "tiny": _boxes_clip([(4, 4, 20, 20), (40, 40, 42, 42)]),  # a 2x2 object: 0.1 % of the frame
        "huge": _boxes_clip([(0, 0, 52, 64)]),  # 81 % of the frame
        "seven": _boxes_clip(seven),
    })
    report = filter_dataset(root, _only("object_area", "num_objects"), tmp_path / "kept",
                            progress=False)
    assert [r["id"] for r in read_index(tmp_path / "kept")] == ["normal"]
    v = _verdicts(root)
    # abs=1e-4: the report rounds scores to 4 decimals (measured 4.4e-5 off)
    assert v["tiny"]["object_area"]["score"] == pytest.approx(4 / (W * H) * 100, abs=1e-4)
    assert not v["tiny"]["object_area"]["pass"] and "smallest object" in v["tiny"]["object_area"]["reason"]
    assert v["huge"]["object_area"]["largest"] > 60 and not v["huge"]["object_area"]["pass"]
    assert v["seven"]["num_objects"] == {"score": 7, "pass": False, "reason": "objects 7 > 5"}
    assert v["normal"]["num_objects"]["pass"] and v["normal"]["object_area"]["pass"]
    assert report.removed == {"object_area": 2, "num_objects": 1}
    assert report.only == {"object_area": 2, "num_objects": 1}
    # a stricter count keeps fewer
    strict = filter_dataset(root, _only("num_objects", num_objects={"max": 1}), tmp_path / "k2",
                            progress=False)
    assert [r["id"] for r in read_index(tmp_path / "k2")] == ["huge"] and strict.kept == 1


def test_track_quality_object_motion_and_duration(make_dataset, tmp_path):
    root = make_dataset({
        "good": _boxes_clip([(4, 4, 20, 20)]),
        "lost": _boxes_clip([(4, 4, 20, 20), (30, 30, 40, 40)], lost_from={2: 6}),  # 6 of 12 lost
        "still": _boxes_clip([(4, 4, 20, 20)], moving=False),
    })
    cfg = _only("track_quality", "object_motion", "duration", duration={"min_seconds": 1.0})
    filter_dataset(root, cfg, tmp_path / "kept", progress=False)
    v = _verdicts(root)
    assert v["lost"]["track_quality"]["score"] == pytest.approx(0.5)
    assert not v["lost"]["track_quality"]["pass"] and v["good"]["track_quality"]["score"] == 0
    assert v["still"]["object_motion"]["score"] == 0 and not v["still"]["object_motion"]["pass"]
    # abs=1e-4: scores rounded to 4 decimals in the report (measured 2.2e-6 off)
    assert v["good"]["object_motion"]["score"] == pytest.approx(11 / np.hypot(W, H) * 100, abs=1e-4)
    assert all(x["duration"] == {"score": 1.5, "pass": True, "reason": None} for x in v.values())
    assert [r["id"] for r in read_index(tmp_path / "kept")] == ["good"]
    too_short = _only("duration", duration={"min_seconds": 2.0})
    with pytest.raises(DatasetError, match=r"no clip passed the filters.*duration removed 3 of 3 "
                                           r"\(good: seconds 1.5 < 2.0; lost: "):
        filter_dataset(root, too_short, tmp_path / "none", progress=False)
    assert _verdicts(root)["good"]["duration"]["reason"] == "seconds 1.5 < 2.0"
    # the report is there, the (empty) dataset is not
    assert (tmp_path / "none" / "filter_report.md").is_file()
    assert not (tmp_path / "none" / "index.jsonl").exists()


def test_filter_and_info_of_an_empty_dataset_say_so(tmp_path, capsys):
    from magicmotion.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "index.jsonl").write_text("")
    assert main(["data", "info", str(tmp_path / "empty")]) == 2
    assert "no clips" in capsys.readouterr().err
    assert main(["data", "filter", str(tmp_path / "empty"), "--out", str(tmp_path / "kept")]) == 2
    assert "no clips to filter" in capsys.readouterr().err
    assert not (tmp_path / "kept").exists()


def test_filter_dataset_writes_subset_report_and_histograms(make_dataset, tmp_path):
    root = make_dataset({"move": _moving(2), "static": _static(),
                         "seven": _boxes_clip([(2 + 9 * k, 2, 8 + 9 * k, 10) for k in range(7)])})
    out = tmp_path / "kept"
    report = filter_dataset(root, ROOT / "configs" / "filters.yaml", out, progress=False)
    kept = read_index(out)
    assert [r["id"] for r in kept] == ["move"] and kept[0]["filter_pass"] is True
    for key in ("video", "annotation"):
        assert os.path.samefile(out / kept[0][key], root / kept[0][key])  # hard-linked
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["move.mp4"]
    data = json.loads((out / "filter_report.json").read_text())
    assert (data["total"], data["kept"]) == (3, 1)
    assert data["removed"]["motion"] == 1 and data["removed"]["object_motion"] == 1  # static
    assert data["removed"]["num_objects"] == 1  # seven
    assert data["removed"] == report.removed and set(data["removed"]) == set(FILTERS)
    md = (out / "filter_report.md").read_text()
    assert "3 clips, 1 kept, 2 removed." in md and "| num_objects | 1 | 1 |" in md
    from PIL import Image

    with Image.open(out / "filter_scores.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    source = {r["id"]: r for r in read_index(root)}
    assert set(source["static"]["filters"]) == set(FILTERS) and source["static"]["filter_pass"] is False
    with pytest.raises(DatasetError, match="already a dataset"):
        filter_dataset(root, None, out, progress=False)
    with pytest.raises(DatasetError, match="another folder"):
        filter_dataset(root, None, root, progress=False)


def test_filter_config_defaults_and_errors(tmp_path):
    assert load_filter_config(ROOT / "configs" / "filters.yaml") == DEFAULTS
    p = tmp_path / "f.yaml"
    p.write_text("motion:\n  min: 1.5\nnum_objects:\n  max: null\n")
    cfg = load_filter_config(p)
    assert cfg["motion"]["min"] == 1.5 and cfg["motion"]["max"] == DEFAULTS["motion"]["max"]
    assert cfg["num_objects"]["max"] is None
    for text, match in [("motoin:\n  min: 1\n", "unknown filter 'motoin'"),
                        ("motion:\n  minimum: 1\n", "motion: unknown key 'minimum'"),
                        ("motion:\n  min: fast\n", "motion.min must be a number"),
                        ("motion:\n  enabled: 1\n", "enabled must be true or false"),
                        ("- motion\n", "must map filter names"),
                        ("motion: [1\n", "not valid YAML")]:
        p.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_filter_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_filter_config(tmp_path / "missing.yaml")


def test_evaluate_without_motion_needs_no_frames():
    _, labels, caption = _boxes_clip([(4, 4, 20, 20)])
    traj = from_label_masks(labels, caption)
    record = {"num_frames": T, "fps": 8.0}
    v = evaluate(record, traj, None, _only("num_objects", "track_quality"))
    assert set(v) == {"num_objects", "track_quality"} and all(x["pass"] for x in v.values())


def test_filter_cli(make_dataset, tmp_path, capsys):
    from magicmotion.cli import main

    root = make_dataset({"move": _moving(2), "static": _static()})
    code = main(["data", "filter", str(root), "--config", str(ROOT / "configs" / "filters.yaml"),
                 "--out", str(tmp_path / "kept"), "--quiet"])
    assert code == 0
    assert "kept 1 of 2 clips" in capsys.readouterr().out
    assert main(["data", "filter", str(tmp_path / "nothing"), "--out", str(tmp_path / "k")]) == 2
