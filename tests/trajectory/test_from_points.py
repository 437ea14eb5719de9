"""Trajectories from point tracks (issue 28): boxes around the visible points, masks moved by the
points' mean motion, occlusion and leaving the frame, the JSON and .npy/.npz layouts, bad input; and
on the real DAVIS annotations, boxes from tracks sampled inside the true masks against the true boxes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from magicmotion.cli import main
from magicmotion.perception.grounding import box_iou
from magicmotion.errors import TrajectoryError
from magicmotion.trajectory import from_mask_frames, load, render
from magicmotion.trajectory.tracks import (PointTracks, TrackedObject, load_tracks, points_box,
                                           shift_mask, tracks_to_trajectory)



def grid_points(mask: np.ndarray, stride: int = 8) -> np.ndarray:
    """(P, 2) x, y of the pixel centres of a stride grid that fall inside `mask` (what a point tracker
    started on a grid over the object's mask follows)."""
    ys, xs = np.nonzero(mask[stride // 2::stride, stride // 2::stride])
    return np.stack([xs, ys], 1) * stride + stride // 2 + 0.5


def tracks_inside(truth, stride: int = 8) -> PointTracks:
    """Per object, tracks sampled on a grid inside its true mask on each annotated frame where it is
    present; on every other frame the points are hidden (NaN)."""
    objects = []
    for o in truth.objects:
        per = [(t, grid_points(o.mask(t), stride)) for t in sorted(o.masks) if o.mask_area(t)]
        n = max(len(p) for _, p in per)
        points = np.full((truth.num_frames, n, 2), np.nan)
        for t, p in per:
            points[t, :len(p)] = p
        objects.append(TrackedObject(id=o.id, points=points, visible=np.isfinite(points).all(-1)))
    return PointTracks(truth.width, truth.height, truth.num_frames, objects, source="sampled")


@pytest.mark.parametrize("name", ["judo", "bike"])
def test_boxes_from_tracks_inside_true_masks_match_the_true_boxes(real_samples, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # judo's 00005.png is a pixel narrower
        truth = from_mask_frames(real_samples / "masks" / name, num_frames=16, fill="none")
    traj = tracks_to_trajectory(tracks_inside(truth))
    checked = 0
    for o in truth.objects:
        got = traj.object(o.id)
        for t, box in o.boxes.items():  # every frame where the true mask is not empty
            # the box of sampled points inside the mask, not its extreme pixels: measured 0.87-0.95
            assert box_iou(got.boxes[t], box) >= 0.8, (name, o.id, t, got.boxes[t], box)
            checked += 1
        # frames where no point is seen have no key: the object is occluded, not gone
        assert sorted(got.boxes) == sorted(o.boxes) and not got.masks
    assert checked == len(truth.objects)  # judo: ids 1..4 on frames 0, 5, 8, 13; bike: 2 on frame 0
    render(traj, "box")  # a normal spec


def test_real_mask_moved_by_the_tracks_mean_motion(real_samples, tmp_path):
    """The bike's real frame-0 mask, followed by points that move (8, -3) px a frame, hidden on frames
    3-4 (occluded) and all outside the frame from frame 9 on (gone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = from_mask_frames(real_samples / "masks" / "bike", fill="none")
    mask = truth.object(1).mask(0)
    w, h = truth.size
    start = grid_points(mask, 12)
    step = np.array([8.0, -3.0])
    points = np.stack([start + t * step for t in range(12)])
    points[9:] = [w + 5, 10]  # known positions, all outside the frame
    visible = np.ones(points.shape[:2], dtype=bool)
    visible[3:5] = False
    visible[:, ::3] &= np.arange(12)[:, None] % 2 == 0  # some points drop out on odd frames
    tracks = PointTracks(w, h, 12, [TrackedObject(1, points, visible, label="bike", mask=mask)], source="t")
    traj = tracks_to_trajectory(tracks)
    o = traj.object(1)
    assert o.label == "bike" and sorted(o.masks) == list(range(12))
    for t in range(9):  # occluded frames 3, 4: the motion interpolated, the same straight line
        np.testing.assert_array_equal(o.mask(t), shift_mask(mask, t * step), err_msg=f"frame {t}")
    for t in range(9, 12):
        assert o.mask_area(t) == 0 and t not in o.boxes  # gone
    assert 3 not in o.boxes and 4 not in o.boxes and 5 in o.boxes
    np.testing.assert_array_equal(o.boxes[0], truth.object(1).boxes[0])  # frame 0: the mask's box
    assert render(traj, "mask").shape == (12, h, w, 3)


def test_points_box_padding_minimum_size_and_frame_edges():
    pts = np.array([[10.0, 20.0], [30.0, 60.0]])
    np.testing.assert_allclose(points_box(pts, (100, 100), padding=0.1, min_size=1), [8, 16, 32, 64])
    np.testing.assert_allclose(points_box(pts[:1], (100, 100), min_size=16), [2, 12, 18, 28])
    np.testing.assert_allclose(points_box(np.array([[1.0, 98.0]]), (100, 100), min_size=16), [0, 84, 16, 100])
    np.testing.assert_allclose(points_box(pts, (20, 100), padding=0, min_size=1), [0, 20, 20, 60])


def write_json_tracks(tmp_path, objects, w=64, h=48, **extra):
    path = tmp_path / "tracks.json"
    path.write_text(json.dumps({"width": w, "height": h, "objects": objects, **extra}))
    return path


def test_json_and_npy_layouts_give_the_same_trajectory(tmp_path):
    """Two objects; object 2's second track is hidden on frame 1 (null), all of object 1's points on
    frame 2 are off the frame to the right (it has left)."""
    a = [[[10, 10], [20, 12], [70, 12]], [[14, 18], [24, 20], [80, 20]]]
    b = [[[40, 30], [41, 31], [42, 32]], [[50, 40], None, [52, 42]]]
    mask = np.zeros((48, 64), dtype=bool)
    mask[28:44, 38:54] = True
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    path = write_json_tracks(tmp_path, [{"id": 1, "label": "dog", "tracks": a},
                                        {"id": 2, "label": "ball", "tracks": b, "mask": "m.png"}],
                             caption="c")
    j = tracks_to_trajectory(load_tracks(path), min_size=4)
    assert j.ids == [1, 2] and [o.label for o in j.objects] == ["dog", "ball"] and j.caption == "c"
    dog, ball = j.objects
    assert sorted(dog.boxes) == [0, 1] and dog.mask_area(2) == 0  # left the frame on 2
    np.testing.assert_allclose(dog.boxes[0], points_box(np.array([[10, 10], [14, 18.0]]), (64, 48), 0.05, 4))
    assert sorted(ball.masks) == [0, 1, 2] and ball.mask_area(1) == mask.sum()
    np.testing.assert_array_equal(ball.mask(2), shift_mask(mask, (2, 2)))
    # the same as (T, N, 2) arrays + visibility + ids
    pts = np.full((3, 4, 2), np.nan)
    for n, track in enumerate(a + b):
        for t, p in enumerate(track):
            if p is not None:
                pts[t, n] = p
    vis = np.isfinite(pts).all(-1)
    np.save(tmp_path / "tracks.npy", pts[None])  # CoTracker's (1, T, N, 2)
    np.save(tmp_path / "vis.npy", vis.astype(np.float32))  # probabilities
    np.save(tmp_path / "ids.npy", np.array([1, 1, 2, 2]))
    labels = np.zeros((48, 64), dtype=np.int64)
    labels[mask] = 2
    n = tracks_to_trajectory(load_tracks(tmp_path / "tracks.npy", (64, 48), visibility=tmp_path / "vis.npy",
                                         ids=tmp_path / "ids.npy", labels=["dog", "ball"], masks=labels,
                                         caption="c"), min_size=4)
    np.savez(tmp_path / "tracks.npz", tracks=pts, visibility=vis, ids=np.array([1, 1, 2, 2]))
    z = tracks_to_trajectory(load_tracks(tmp_path / "tracks.npz", (64, 48), labels=["dog", "ball"],
                                         masks=labels, caption="c"), min_size=4)
    from magicmotion.trajectory import to_dict

    assert to_dict(n) | {"objects": None} == to_dict(j) | {"objects": None}
    for x in (n, z):
        assert json.dumps(to_dict(x)["objects"]) == json.dumps(to_dict(j)["objects"])


def test_from_points_command(tmp_path, capsys):
    path = write_json_tracks(tmp_path, [{"id": 1, "label": "dog",
                                         "tracks": [[[10, 10], [20, 12]], [[14, 18], [24, 20]]]}])
    out = tmp_path / "spec.json"
    assert main(["trajectory", "from-points", str(path), "--out", str(out), "--min-size", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load(out).num_frames == 2
    # motion transfer: the object's frame-0 box onto a box in a new first frame
    from magicmotion.io import write_image

    write_image(tmp_path / "new.png", np.zeros((30, 40, 3), dtype=np.uint8))
    assert main(["trajectory", "from-points", str(path), "--out", str(out), "--fit-to", str(tmp_path / "new.png"),
                 "--fit-box", "0,0,10,10"]) == 0
    fitted = load(out)
    assert fitted.size == (40, 30)
    np.testing.assert_allclose(fitted.object(1).boxes[0], [0, 0, 10, 10])


@pytest.mark.parametrize("objects, extra, message", [
    ([{"id": 1, "tracks": [[[1, 2], [float("nan"), 3]]]}], {},
     "tracks.json: object 1 track 0 frame 1: point is [nan, 3.0] (NaN or infinite) but marked visible"),
    ([{"id": 1, "tracks": [[[1, 2], [500, 3]]]}], {},
     "tracks.json: object 1 track 0 frame 1: point (500, 3) is far outside the 64x48 frame"),
    ([{"id": 1, "tracks": [[[-5, 2], [70, 3]]]}], {},
     "tracks.json: object 1: no point is visible inside the 64x48 frame on any frame"),
    ([{"id": 1, "tracks": [[[1, 2], [2, 3]], [[1, 2]]]}], {}, "tracks.json: object 1 track 1: must be a list of 2"),
    ([{"id": 1, "tracks": [[[1, 2]]], "visible": [[1]]}], {}, "'visible' must be 1 lists of 1 true/false"),
    ([{"id": 1, "tracks": [[[1, 2]]]}], {"num_frames": 5}, "'num_frames' is 5 but the tracks have 1 points"),
    ([], {}, "'objects' must be a non-empty list"),
])
def test_bad_tracks_exit_2_with_one_line(tmp_path, capsys, objects, extra, message):
    path = tmp_path / "tracks.json"
    path.write_text(json.dumps({"width": 64, "height": 48, "objects": objects, **extra}))
    out = tmp_path / "spec.json"
    assert main(["trajectory", "from-points", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_bad_arrays_and_fit_box(tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.zeros((3, 2, 2)) + 5)

    def fails(*args) -> str:
        assert main(["trajectory", "from-points", *map(str, args), "--out", str(tmp_path / "s.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and not (tmp_path / "s.json").exists()
        return err[0]

    assert "arrays do not say the frame size: pass --frame-size WxH or --image" in fails(tmp_path / "t.npy")
    np.save(tmp_path / "bad.npy", np.zeros((3, 2)))
    assert "tracks must be (T, N, 2)" in fails(tmp_path / "bad.npy", "--frame-size", "64x48")
    np.save(tmp_path / "v.npy", np.ones((2, 3)))
    assert "visibility must be (T, N) = (3, 2)" in fails(tmp_path / "t.npy", "--frame-size", "64x48",
                                                         "--visibility", tmp_path / "v.npy")
    from magicmotion.io import write_image

    write_image(tmp_path / "new.png", np.zeros((30, 40, 3), dtype=np.uint8))
    msg = fails(tmp_path / "t.npy", "--frame-size", "64x48", "--fit-to", tmp_path / "new.png",
                "--fit-box", "30,0,50,10")
    assert "new.png: --fit-box 1 [30.0, 0.0, 50.0, 10.0] is outside the 40x30 image" in msg
    with pytest.raises(TrajectoryError, match="padding must be >= 0"):
        tracks_to_trajectory(load_tracks(tmp_path / "t.npy", (64, 48)), padding=-1)
