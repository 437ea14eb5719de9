"""Training samples: stage conditions, sparse key frames, dropout, the resumable sample order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magicmotion.training.data import (ClipConditions, ResumableSampler, SampleKey, epoch_order, frames_to_tensor,
                                       stage_maps)
from magicmotion.trajectory import from_label_masks, render


def moving_objects(frames: int = 30, size: int = 32):
    """Two squares crossing the frame, present on every frame."""
    labels = np.zeros((frames, size, size), dtype=np.int32)
    for t in range(frames):
        x = int(t * (size - 8) / (frames - 1))
        labels[t, 4:10, x:x + 6] = 1
        labels[t, 20:28, size - 8 - x:size - x] = 2
    return from_label_masks(labels, caption="two squares")


def test_sparse_key_frames_at_most_nine_and_frame0_the_mask():
    traj = moving_objects()
    mask0 = render(traj, "mask")[0]
    counts = []
    for seed in range(150):
        maps = stage_maps(traj, "sparse_box", np.random.default_rng(seed), sparse_max_keys=9)
        assert maps.shape == (30, 32, 32, 3) and maps.dtype == np.uint8
        assert np.array_equal(maps[0], mask0), f"seed {seed}: frame 0 is not the mask"
        keys = [t for t in range(1, 30) if maps[t].any()]
        assert 1 <= len(keys) <= 9, f"seed {seed}: {len(keys)} key frames besides frame 0"
        counts.append(len(keys))
        # key frames are box outlines: the box interior is black where a filled mask would not be
        dense_boxes = render(traj, "box")
        for t in keys:
            assert np.array_equal(maps[t], dense_boxes[t])
    assert min(counts) == 1 and max(counts) == 9  # the whole range 1..9 is drawn
    few = [sum(stage_maps(traj, "sparse_box", np.random.default_rng(s), 3)[1:].any(axis=(1, 2, 3)))
           for s in range(40)]
    assert max(few) <= 3


def test_dense_stage_maps():
    traj = moving_objects(frames=9)
    assert np.array_equal(stage_maps(traj, "mask", None), render(traj, "mask"))
    boxes = stage_maps(traj, "box", None)
    assert np.array_equal(boxes[0], render(traj, "mask")[0])  # frame 0 of the box maps is the mask
    assert all(boxes[t].any() for t in range(9))


class FakeClips:
    """Stands in for magicmotion.data.reader.Dataset."""

    def __init__(self, n=3, frames=9):
        self.n, self.frames, self.epochs = n, frames, []

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __getitem__(self, i):
        from types import SimpleNamespace

        traj = moving_objects(self.frames)
        frames = np.full((self.frames, 32, 32, 3), 40 * i, dtype=np.uint8)
        return SimpleNamespace(id=f"clip{i}", frames=frames, caption=f"caption {i}", trajectory=traj, fps=8.0)


def test_clip_conditions_items():
    clips = FakeClips()
    item = ClipConditions(clips, "sparse_box", need_mask=True)[SampleKey(2, 5, 123)]
    assert clips.epochs == [5]
    assert item["video"].shape == (3, 9, 32, 32) and item["video"].dtype == torch.float32
    assert torch.allclose(item["video"], torch.full_like(item["video"], 80 / 255 * 2 - 1))  # float32 of 80/255: 3e-8
    assert item["trajectory"].min() >= -1 and item["trajectory"].max() <= 1
    mask = frames_to_tensor(render(moving_objects(9), "mask"))
    assert torch.equal(item["mask"], mask)  # the L_seg target: mask maps
    assert torch.equal(item["trajectory"][:, 0], mask[:, 0])
    assert item["caption"] == "caption 2" and item["id"] == "clip2" and item["seed"] == 123
    # the same key gives the same sample; stage 1 needs no separate mask maps
    again = ClipConditions(clips, "sparse_box", need_mask=True)[SampleKey(2, 5, 123)]
    assert torch.equal(again["trajectory"], item["trajectory"])
    assert "mask" not in ClipConditions(clips, "mask", need_mask=True)[SampleKey(0, 0, 1)]


def test_dropout_probabilities():
    clips = FakeClips()
    always = ClipConditions(clips, "mask", image_dropout=1.0, caption_dropout=1.0)
    never = ClipConditions(clips, "mask")
    for s in range(10):
        a, n = always[SampleKey(0, 0, s)], never[SampleKey(0, 0, s)]
        assert a["drop_image"] and a["caption"] == ""
        assert not n["drop_image"] and n["caption"] == "caption 0"
    half = ClipConditions(clips, "mask", image_dropout=0.5)
    dropped = sum(bool(half[SampleKey(0, 0, s)]["drop_image"]) for s in range(200))
    assert 70 < dropped < 130


def take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_resumable_sampler_order_and_resume():
    s = ResumableSampler(5, seed=3)
    keys = take(s, 12)
    assert [k.index for k in keys[:5]] == epoch_order(5, 3, 0)
    assert sorted(k.index for k in keys[:5]) == list(range(5))
    assert [k.epoch for k in keys] == [0] * 5 + [1] * 5 + [2] * 2
    assert len({k.seed for k in keys}) == 12
    assert epoch_order(5, 3, 0) != epoch_order(5, 3, 1) or epoch_order(5, 3, 1) != epoch_order(5, 3, 2)
    # resuming at sample 7 (epoch 1, position 2) continues exactly
    r = ResumableSampler(5, seed=3)
    r.start(*divmod(7, r.per_epoch()))
    assert take(r, 5) == keys[7:12]


def test_sampler_shards_across_processes():
    shards = [take(ResumableSampler(8, seed=0, rank=r, world_size=2), 4) for r in range(2)]
    indices = [k.index for shard in shards for k in shard]
    assert sorted(indices) == list(range(8))
    seeds = [k.seed for shard in shards for k in shard]
    assert len(set(seeds)) == 8
    with pytest.raises(Exception, match="no clips"):
        ResumableSampler(0, seed=0)
