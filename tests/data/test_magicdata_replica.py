"""MagicData as the authors draw it: replica clips drawn with supervision's MaskAnnotator and OpenCV's
rectangles (tests/magicdata_replica.py), imported with `import_magicdata` and compared with the truth
those libraries give: the visible masks, the drawn boxes, the frames where an object is covered.

Thresholds (issue 35): no object lost or merged; visible-mask IoU mean >= 0.97 and worst object
>= 0.90; boxes within 2 px of the drawn box for >= 98% of the (object, frame) pairs whose outline
shows on at least two sides; every fully covered (object, frame) recorded as occluded."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from magicdata_replica import (HARD_IDS, compression_noise, draw_clip, occlusion_scene, random_scene,
                               score_clip, write_release)

from magicmotion.data.dataset import read_index
from magicmotion.data.magicdata import ClipSkipped, decode_clip_maps, import_magicdata
from magicmotion.trajectory import load

MASK_IOU_MEAN, MASK_IOU_WORST = 0.97, 0.90   # issue 35's "done when"
BOX_PX, BOX_SHARE = 2, 0.98                   # issue 35's "done when"

# a small object in a colour near the blend of larger ones' colours (see `HARD_IDS`): small id first
HARD_COMBOS = [(9, [8]), (13, [14]), (17, [16, 18]), (16, [21]), (21, [16]), (3, [1, 4]),
               (2, [4, 19]), (13, [10, 17]), (11, [8, 15])]


def fixed_set():
    """The regression set: 20 random clips (1..8 objects, two of them small, down to 0.2% of the
    frame; ids 1..n or drawn from 1..21; 720x480 and 718x406; one with the box maps' frame 0 filled
    as plan_box.py writes it), 9 clips of a small object whose colour lies near the blend of larger
    ones', an object covered by two smaller ones, and a 49-frame clip."""
    clips = {}
    for k in range(20):
        rng = np.random.default_rng([35, k])
        size = (720, 480) if k % 2 == 0 else (718, 406)
        n = 1 + k % 8
        ids = (list(range(1, n + 1)) if k % 4 < 2 else
               sorted(rng.choice(np.arange(1, 22), n, replace=False).tolist()))
        full = random_scene(rng, size=size, frames=4, n_objects=n, ids=ids, small=min(2, n - 1))
        clips[f"rand{k:02d}"] = draw_clip(full, filled_first=(k == 5))
    for k, (small, big) in enumerate(HARD_COMBOS):
        rng = np.random.default_rng([36, k])
        ids = [small] + big + ([5, 6] if k % 3 == 0 else [])
        full = random_scene(rng, size=(720, 480) if k % 2 == 0 else (718, 406), frames=4,
                            n_objects=len(ids), ids=ids, small=1, max_area=0.15)
        clips[f"hard{k}"] = draw_clip(full)
    clips["covered"] = draw_clip(occlusion_scene((320, 240), frames=9))
    full = random_scene(np.random.default_rng(49), size=(360, 240), frames=49, n_objects=5, small=1)
    clips["long49"] = draw_clip(full)
    return clips


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("replica")
    clips = fixed_set()
    for vid, clip in clips.items():
        write_release(root, vid, clip)
    with open(root / "MagicData.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "caption"])
        w.writerows([(vid, f"objects of {vid}") for vid in clips])
    out = root.parent / f"{root.name}-data"
    summary = import_magicdata(root, out, progress=False)
    return clips, out, summary


def _figures(scores: list[dict]) -> dict:
    ious = [v for s in scores for v in s["mask_iou"].values()]
    errs = np.array([e for s in scores for _, _, e in s["box_err"]])
    return {"lost": sum(len(s["lost"]) + len(s["extra"]) for s in scores),
            "iou_mean": float(np.mean(ious)), "iou_worst": float(np.min(ious)),
            "box_share": float(np.mean(errs <= BOX_PX)), "pairs": len(errs)}


@pytest.mark.slow  # about 40 s: 31 clips drawn, written and imported (in the default run)
def test_replica_set_meets_the_figures(imported):
    clips, out, summary = imported
    assert len(clips) >= 20 and max(len(c.ids) for c in clips.values()) == 8
    assert summary.skipped == [] and summary.imported == len(clips)
    report = json.loads((out / "import.json").read_text())
    records = {r["id"]: r for r in read_index(out)}
    scores = []
    for vid, clip in clips.items():
        traj = load(out / records[vid]["annotation"])
        s = score_clip(clip, traj)
        scores.append(s)
        assert s["lost"] == [] and s["extra"] == [], vid
        assert records[vid]["num_objects"] == len(clip.ids)
        # occlusions: every (object, frame) fully covered on the mask maps, and nothing else
        recorded = {int(k): v for k, v in report["occluded"].get(vid, {}).items()}
        assert recorded == s["covered"], vid
    fig = _figures(scores)
    assert fig["lost"] == 0
    assert fig["iou_mean"] >= MASK_IOU_MEAN and fig["iou_worst"] >= MASK_IOU_WORST, fig
    assert fig["box_share"] >= BOX_SHARE and fig["pairs"] > 500, fig
    assert report["occluded"]["covered"] == {"1": [3, 4, 5]}  # under the two halves mid-clip
    print("replica figures:", fig)


@pytest.mark.slow  # shares the set above
def test_a_merging_decoder_fails_the_figures(imported):
    """The bound is calibrated: ids 16 and 21 read as one object (their colours are 18.7 apart, the
    old decoder's tolerance was 20) fails it."""
    clips, out, _ = imported
    records = {r["id"]: r for r in read_index(out)}
    clip = clips["hard3"]  # a small 16 over a large 21
    traj = load(out / records["hard3"]["annotation"])
    merged = [o for o in traj.objects if o.id != 16]
    traj.objects = merged
    s = score_clip(clip, traj)
    assert s["lost"] == [16]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 10), w=st.integers(100, 240),
       h=st.integers(100, 180), filled=st.booleans(), hard=st.booleans())
def test_random_scenes_round_trip(seed, n, w, h, filled, hard):
    """Any scene supervision and OpenCV draw (1..10 objects, some small, overlapping, touching,
    leaving the frame; odd sizes) reads back with every object, its exact visible mask (PNG maps
    hold no blends) and its drawn box wherever the outline shows on two sides or more."""
    rng = np.random.default_rng(seed)
    ids = sorted(rng.choice(np.arange(1, 22), n, replace=False).tolist())
    if hard:
        ids = sorted(set(ids[:max(0, n - 2)]) | set(rng.choice(HARD_IDS, min(n, 2), replace=False).tolist()))
    full = random_scene(rng, size=(w, h), frames=3, n_objects=len(ids), ids=ids, small=min(2, len(ids) - 1),
                        min_area=0.004)
    clip = draw_clip(full, filled_first=filled)
    traj, counts = decode_clip_maps(clip.masks, clip.boxes)
    s = score_clip(clip, traj)
    assert s["lost"] == [] and s["extra"] == []
    assert min(s["mask_iou"].values()) == 1.0  # lossless maps read exactly
    bad = [(i, t, e) for i, t, e in s["box_err"] if e > BOX_PX]
    # a drawn box read back from its outline: measured no box off by more than BOX_PX in the 8
    # examples; 10% allows outlines hidden on all but two sides by overlapping objects
    assert len(bad) <= 0.1 * max(1, len(s["box_err"])), bad
    assert counts["occluded"] == s["covered"]


def _noisy_hard_clip(k: int):
    small, big = HARD_COMBOS[k]
    rng = np.random.default_rng([36, k])
    full = random_scene(rng, size=(360, 240), frames=4, n_objects=1 + len(big), ids=[small] + big, small=1,
                        max_area=0.15)
    clip = draw_clip(full)
    noise = np.random.default_rng(k)
    return clip, compression_noise(clip.masks, noise), compression_noise(clip.boxes, noise)


def test_noisy_maps_tell_close_colours_apart_by_shape(monkeypatch):
    """Maps with compression-like noise (up to 8 per channel): a small object in a blend-like colour
    and the pair 16/21 (18.7 apart: noise moves pixels across their midpoint) still read as their
    own objects, because an unsure pixel takes the label of its clear neighbours. Without that vote
    (a wrong variant, kept here) the 16/21 clips are refused."""
    import magicmotion.trajectory.decode as decode

    for k in range(len(HARD_COMBOS)):
        clip, masks, boxes = _noisy_hard_clip(k)
        traj, _ = decode_clip_maps(masks, boxes)
        s = score_clip(clip, traj)
        assert s["lost"] == [] and s["extra"] == [], k
        assert min(s["mask_iou"].values()) >= MASK_IOU_WORST, (k, s["mask_iou"])
        errs = np.array([e for _, _, e in s["box_err"]])
        assert np.mean(errs <= BOX_PX) >= BOX_SHARE, (k, s["box_err"])
    monkeypatch.setattr(decode, "AMBIGUOUS_SHARE", 0.0)
    clip, masks, boxes = _noisy_hard_clip(3)  # a small 16 over a large 21
    with pytest.raises(ClipSkipped, match="object 16 frame 0: the mask spans"):
        decode_clip_maps(masks, boxes)
