"""The synthetic world: masks match what was drawn, boxes enclose masks, occlusion, seeds, captions,
and the dataset it writes."""

import json

import numpy as np
import pytest
from matplotlib.path import Path as PolyPath

from magicmotion.cli import main
from magicmotion.data.dataset import read_index
from magicmotion.data.reader import Dataset
from magicmotion.data.synthetic import (BACKGROUNDS, COLORS, POLYGONS, SHAPES, TEXTURE_MIN, VOCABULARY,
                                        SyntheticWorld, caption_for, clip_id, shape_mask, split_for,
                                        synthesize)
from magicmotion.errors import DatasetError
from magicmotion.trajectory import from_label_masks, load, mask_box


def scene(k, seed=0, **kw):
    return SyntheticWorld(**kw).sample_scene(np.random.default_rng([seed, k]))


def silhouettes(sc):
    """Each object's own silhouette (ignoring occlusion), by id: bool (T, H, W)."""
    return {o.id: shape_mask(o.shape, o.centers, o.radii, o.angles, sc.size) for o in sc.objects}


# ------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "circle"])
def test_polygon_masks_agree_with_an_independent_point_in_polygon_test(shape):
    rng = np.random.default_rng(1)
    size = (48, 40)
    centers = rng.uniform(0, 40, (3, 2))  # some reach out of the frame
    radii = rng.uniform(6, 12, 3)
    angles = rng.uniform(0, 2 * np.pi, 3)
    masks = shape_mask(shape, centers, radii, angles, size)
    ys, xs = np.mgrid[0:size[1], 0:size[0]] + 0.5
    for t in range(3):
        c, s = np.cos(angles[t]), np.sin(angles[t])
        rot = np.array([[c, -s], [s, c]])  # object frame -> image frame
        verts = POLYGONS[shape] @ rot.T * radii[t] + centers[t]
        inside = PolyPath(verts).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(xs.shape)
        differ = masks[t] != inside
        # only pixels whose centre lies on an edge may disagree
        assert differ.sum() <= 2, (shape, t, differ.sum())
        assert masks[t].sum() > 40


def test_circle_area_and_extent():
    m = shape_mask("circle", np.array([[32.0, 30.0]]), np.array([10.0]), np.array([0.3]), (64, 64))[0]
    assert abs(m.sum() - np.pi * 100) < 0.03 * np.pi * 100  # pixel grid of r=10: measured 0.6% off
    assert mask_box(m).tolist() == [22, 20, 42, 40]


def test_unknown_shape_is_an_error():
    with pytest.raises(DatasetError, match="unknown shape 'blob'"):
        shape_mask("blob", np.zeros((1, 2)), np.ones(1), np.zeros(1), (16, 16))


# ------------------------------------------------------------------------------------ drawing


@pytest.mark.parametrize("k", range(6))
def test_labels_match_what_was_drawn(k):
    world = SyntheticWorld()
    sc = world.sample_scene(np.random.default_rng([3, k]))
    frames, labels = world.render(sc)
    t, h, w = labels.shape
    assert frames.shape == (t, h, w, 3) and frames.dtype == np.uint8 and (t, w, h) == (17, 64, 64)
    # re-render: the label of a pixel is the front-most object whose silhouette covers it
    expected = np.zeros_like(labels)
    best_z = np.full(labels.shape, -1)
    for o in sc.objects:
        m = silhouettes(sc)[o.id] & (o.z > best_z)
        expected[m], best_z[m] = o.id, o.z
    np.testing.assert_array_equal(labels, expected)
    # object pixels have the object's colour (times its texture's brightness) ...
    for o in sc.objects:
        px = frames[labels == o.id].astype(np.float64)
        color = np.array(o.color, dtype=np.float64)
        f = px @ color / (color @ color)
        # uint8 rounding: half a level per channel moves f by a few 1/255 (measured [0.6, 1.0] exactly)
        # and leaves each channel within about a level of f x colour (measured 0.60)
        assert f.min() >= TEXTURE_MIN - 0.02 and f.max() <= 1.0 + 0.01
        assert np.abs(px - f[:, None] * color).max() <= 1.5
    # ... and the background shows where no object is
    bg = np.clip(world.render_background(sc) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(frames[labels == 0], bg[labels == 0])


def test_object_colours_are_saturated_and_backgrounds_muted():
    world = SyntheticWorld()
    for k in range(10):
        sc = world.sample_scene(np.random.default_rng([5, k]))
        bg = world.render_background(sc)
        sat_bg = (bg.max(-1) - bg.min(-1)) / np.maximum(bg.max(-1), 1)
        assert sat_bg.max() < 0.35  # muted: measured at most 0.26 over these 10 scenes
        names = [o.color_name for o in sc.objects]
        assert len(set(names)) == len(names)
    for rgb in COLORS.values():
        assert (max(rgb) - min(rgb)) / max(rgb) > 0.6  # the palette's least saturated: 0.65


def test_occlusions_are_reflected_in_masks():
    world = SyntheticWorld()
    found = 0
    for k in range(40):
        sc = world.sample_scene(np.random.default_rng([0, k]))
        _, labels = world.render(sc)
        traj = from_label_masks(labels)
        sil = silhouettes(sc)
        for a in sc.objects:
            for b in sc.objects:
                if a.z <= b.z:
                    continue  # a in front of b
                overlap = sil[a.id] & sil[b.id]
                for c in sc.objects:  # not hidden by a third object in front of both
                    if c.z > a.z:
                        overlap &= ~sil[c.id]
                if overlap.sum() < 10:
                    continue
                found += 1
                assert (labels[overlap] == a.id).all()
                back = np.stack([traj.object(b.id).mask(t) for t in range(sc.num_frames)])
                assert not (back & overlap).any()
                assert back.sum() < sil[b.id].sum()
    assert found >= 5, "the world should sometimes make objects overlap"


# ------------------------------------------------------------------------------------ the world


def test_seeds_reproduce_and_differ():
    world = SyntheticWorld(size=(48, 32), num_frames=9)
    a = world.sample(np.random.default_rng([7, 2]))
    b = world.sample(np.random.default_rng([7, 2]))
    c = world.sample(np.random.default_rng([7, 3]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert a[0].shape == (9, 32, 48, 3) and a[1].shape == (9, 32, 48)
    assert not np.array_equal(a[0], c[0])


def test_objects_stay_visible_smooth_and_at_least_8_px():
    world = SyntheticWorld()
    counts, pans = [], 0
    for k in range(60):
        sc = world.sample_scene(np.random.default_rng([11, k]))
        _, labels = world.render(sc)
        counts.append(len(sc.objects))
        pans += sc.pan is not None
        sil = silhouettes(sc)
        for o in sc.objects:
            # whole silhouette on a padded canvas: at least 8 px across on every frame
            whole = shape_mask(o.shape, o.centers + 32, o.radii, o.angles, (128, 128))
            for axis in (1, 2):
                seen = whole.any(axis=axis)  # (T, W) columns or (T, H) rows
                extent = seen.shape[1] - seen[:, ::-1].argmax(1) - seen.argmax(1)
                assert extent.min() >= 8
            # at least partly in frame on every frame, and clearly visible on frame 0
            assert sil[o.id].any(axis=(1, 2)).all()
            assert (labels[0] == o.id).sum() >= 30
            # smooth: bounded speed and acceleration (pixels per frame; measured at most 2.9 and 1.46
            # over these scenes, speed's range being 0.4-1.8 px per frame on average)
            assert np.linalg.norm(np.diff(o.centers, axis=0), axis=1).max() < 4.0
            assert np.linalg.norm(np.diff(o.centers, 2, axis=0), axis=1).max() < 2.5
    assert min(counts) == 1 and max(counts) == 5
    assert 0.15 <= pans / 60 <= 0.5  # pan_prob 0.3: binomial sd over 60 is 0.06 (measured 0.27)


def test_captions_use_the_vocabulary_and_describe_the_scene():
    world = SyntheticWorld()
    for k in range(40):
        sc = world.sample_scene(np.random.default_rng([2, k]))
        cap = caption_for(sc)
        assert set(cap.split()) <= set(VOCABULARY), cap
        for o in sc.objects:
            assert f"{o.color_name} {o.shape}" in cap
        assert f"over a {sc.background} background" in cap
        assert ("while the camera pans" in cap) == (sc.pan is not None)
        assert cap.count(" and ") == len(sc.objects) - 1
    assert len(VOCABULARY) == len(set(VOCABULARY))
    assert set(BACKGROUNDS) <= set(VOCABULARY)


def test_bad_world_settings_are_errors():
    with pytest.raises(DatasetError, match="max_objects"):
        SyntheticWorld(max_objects=9)
    with pytest.raises(DatasetError, match="at least 16x16"):
        SyntheticWorld(size=(8, 8))


# ------------------------------------------------------------------------------------ datasets


def test_synthesize_writes_exact_masks_and_boxes(tmp_path):
    out = tmp_path / "ds"
    records = synthesize(out, 4, frames=9, size=(48, 40), seed=3, progress=False)
    assert [r["id"] for r in records] == [clip_id(3, k) for k in range(4)]
    assert [r["id"] for r in read_index(out)] == [r["id"] for r in records]
    world = SyntheticWorld(size=(48, 40), num_frames=9)
    for k, r in enumerate(records):
        sc = world.sample_scene(np.random.default_rng([3, k]))
        _, labels = world.render(sc)
        traj = load(out / r["annotation"])
        assert traj.caption == r["caption"] == caption_for(sc)
        assert r["num_objects"] == len(sc.objects) == len(traj.objects)
        assert (r["width"], r["height"], r["num_frames"]) == (48, 40, 9)
        for o in traj.objects:
            assert o.label == sc.objects[o.id - 1].label
            for t in range(9):
                m = o.mask(t)
                np.testing.assert_array_equal(m, labels[t] == o.id)
                if m.any():
                    ys, xs = np.nonzero(m)
                    assert o.boxes[t].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                else:
                    assert t not in o.boxes


def test_clips_do_not_depend_on_the_number_written(tmp_path):
    a = synthesize(tmp_path / "a", 2, frames=5, size=(32, 32), seed=9, progress=False)
    b = synthesize(tmp_path / "b", 3, frames=5, size=(32, 32), seed=9, progress=False)
    assert a == b[:2]
    for r in a:
        ann = r["annotation"]
        assert (tmp_path / "a" / ann).read_bytes() == (tmp_path / "b" / ann).read_bytes()
    da, db = Dataset(tmp_path / "a", sampling="start"), Dataset(tmp_path / "b", sampling="start")
    np.testing.assert_array_equal(da[1].frames, db[1].frames)


def test_splits_are_fixed_by_hash():
    splits = [split_for(0, k, 0.1) for k in range(400)]
    assert splits == [split_for(0, k, 0.1) for k in range(400)]
    assert 0.05 < splits.count("test") / 400 < 0.16  # 0.1 +- 3.3 sd of 400 draws (measured 0.11)
    assert all(split_for(0, k, 0.0) == "train" for k in range(50))
    assert all(split_for(0, k, 1.0) == "test" for k in range(50))


def test_synth_and_info_cli(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["data", "synth", "--out", str(out), "--clips", "3", "--frames", "5", "--size", "32x24",
            "--seed", "4", "--test-fraction", "0.5"]
    assert main(args) == 0
    assert len(read_index(out)) == 3
    args[args.index("--clips") + 1] = "5"
    assert main(args) == 0  # resumes: clips 0..2 are skipped
    assert "wrote 2 clips (3 already there)" in capsys.readouterr().out
    records = read_index(out)
    assert [r["id"] for r in records] == [clip_id(4, k) for k in range(5)]
    assert {r["split"] for r in records} <= {"train", "test"}
    assert [r["split"] for r in records] == [split_for(4, k, 0.5) for k in range(5)]
    assert all((r["width"], r["height"], r["num_frames"]) == (32, 24, 5) for r in records)

    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_clips"] == 5
    assert sum(info["objects_per_clip"].values()) == 5
    assert (out / "info.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_synth_cli_errors(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--clips", "1", "--seed", "-1"]) == 2
    assert "seed must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "64by64"])
