"""Precomputed latents: the same tensors the on-the-fly path computes, checked against the config."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from magicmotion.errors import ConfigError
from magicmotion.training.config import load_config
from magicmotion.training.data import (ClipConditions, PrecomputedIndex, PrecomputedLatents, SampleKey, collate,
                                       frames_to_tensor, stage_maps)


@pytest.fixture(scope="module")
def on_the_fly(wan_base, dataset):
    """(clips, encoder) of the tiny Wan base, as the trainer builds them without precomputed data."""
    from magicmotion.data.reader import Dataset
    from magicmotion.training.conditioning import (LatentEncoder, encoder_names, load_base_components,
                                                   load_transformer_config)

    clips = Dataset(dataset, num_frames=9, size=(32, 32), sampling="start", split="train")
    encoder = LatentEncoder("wan", load_base_components(str(wan_base), encoder_names("wan")),
                            load_transformer_config(str(wan_base), "wan"))
    return clips, encoder


def test_index_and_files(wan_precomputed, dataset):
    meta = json.loads((wan_precomputed / "index.json").read_text())
    assert meta["kinds"] == ["mask", "box", "sparse_box"] and meta["sparse_variants"] == 2
    assert [c["id"] for c in meta["clips"]] == [c for c in sorted(p.stem for p in (wan_precomputed / "clips").iterdir())]
    assert len(meta["clips"]) == 3  # the train split
    assert (wan_precomputed / "empty_prompt.safetensors").is_file()


def test_precomputed_equals_on_the_fly(wan_precomputed, on_the_fly, make_config):
    clips, encoder = on_the_fly
    index = PrecomputedIndex.read(wan_precomputed)
    for kind in ("mask", "box"):
        pre = PrecomputedLatents(index, kind, need_mask=True)
        raw = ClipConditions(clips, kind, need_mask=True)
        for i in range(len(clips)):
            key = SampleKey(i, 0, 5)
            ours = encoder.encode(collate([raw[key]]), need_mask=True)
            theirs = collate([pre[key]])
            for name in ("latents", "trajectory_latents", "mask_latents", "image_condition", "prompt_embeds"):
                # stored float32, encoded again: batch-size rounding, measured 5.4e-7 at |x| up to 2.8
                assert torch.allclose(ours[name], theirs[name], atol=1e-5), (kind, i, name)
            assert theirs["id"] == [clips.records[i]["id"]]


def test_sparse_variants(wan_precomputed, on_the_fly):
    from safetensors.torch import load_file

    clips, encoder = on_the_fly
    clip = clips[0]
    tensors = load_file(str(wan_precomputed / "clips" / f"{clip.id}.safetensors"))
    variants = [tensors[f"trajectory.sparse_box.{v:03d}"] for v in range(2)]
    for v, stored in enumerate(variants):
        maps = stage_maps(clip.trajectory, "sparse_box", np.random.default_rng([0, zlib.crc32(clip.id.encode()), v]))
        # float32 rounding of another batch: measured 3.6e-7
        assert torch.allclose(encoder.encode_video(frames_to_tensor(maps)[None], trajectory=True)[0], stored, atol=1e-5)
    # training picks a variant per sample seed
    pre = PrecomputedLatents(PrecomputedIndex.read(wan_precomputed), "sparse_box")
    picked = {int(torch.equal(pre[SampleKey(0, 0, s)]["trajectory_latents"], variants[1])) for s in range(20)}
    assert picked == {0, 1}


def test_caption_dropout_uses_the_empty_prompt(wan_precomputed, on_the_fly):
    clips, encoder = on_the_fly
    pre = PrecomputedLatents(PrecomputedIndex.read(wan_precomputed), "mask", caption_dropout=1.0)
    # stored and encoded again: measured 0
    assert torch.allclose(pre[SampleKey(0, 0, 1)]["prompt_embeds"], encoder.encode_prompt([""])[0], atol=1e-6)


def test_index_must_fit_the_config(wan_precomputed, make_config):
    index = PrecomputedIndex.read(wan_precomputed)
    index.check_fits(make_config())
    with pytest.raises(ConfigError, match="num_frames 9 .*config: 5"):
        index.check_fits(make_config(**{"data.num_frames": 5}))
    only_mask = PrecomputedIndex(index.folder, dict(index.meta, kinds=["mask"]))
    with pytest.raises(ConfigError, match=r"no box trajectory latents \(it holds mask; stage 2 needs "
                                          r"box\): precompute again with all three kinds, "
                                          r"`magicmotion train precompute --config "):
        only_mask.check_fits(make_config(condition="box", stage=2))


def test_precompute_cli_and_rerun(tmp_path, wan_base, dataset):
    import yaml

    from magicmotion.cli import main
    from training_helpers import config_dict

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_dict(wan_base, dataset, tmp_path / "run")))
    out = tmp_path / "pre"
    assert main(["train", "precompute", "--config", str(path), "--out", str(out), "--set", "data.split=test",
                 "--no-progress"]) == 0
    files = list((out / "clips").iterdir())
    # all three kinds by default: stage 1's precompute serves stages 2 and 3
    assert len(files) == 1
    assert json.loads((out / "index.json").read_text())["kinds"] == ["mask", "box", "sparse_box"]
    for stage, kind in ((2, "box"), (3, "sparse_box")):
        config = load_config(path, ["data.split=test", f"stage={stage}", f"condition={kind}"], check=False)
        PrecomputedIndex.read(out).check_fits(config)
    stamp = files[0].stat().st_mtime_ns
    assert main(["train", "precompute", "--config", str(path), "--out", str(out), "--set", "data.split=test",
                 "--no-progress"]) == 0
    assert files[0].stat().st_mtime_ns == stamp  # finished clips are not encoded again
    assert main(["train", "precompute", "--config", str(path), "--out", str(out), "--kinds", "lines"]) == 2
