"""configs/tiny/*.yaml from a fresh clone: a folder holding only the tracked configs/ and src/ (no
runs/, no data/). The first run names the command that makes the data; after it, every config
trains, in the order of the stages (each starts from the output of the one before)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from magicmotion.cli import main

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["stage1", "stage2", "stage3", "stage2-from-scratch", "stage2-no-seg"]
SYNTH = "magicmotion data synth --out data/tiny --clips 100 --frames 17 --size 64x64 --seed 0"


def test_every_tiny_config_is_run_and_documented():
    assert sorted(ORDER) == sorted(p.stem for p in (ROOT / "configs" / "tiny").glob("*.yaml"))
    docs = (ROOT / "docs" / "training.md").read_text()
    assert SYNTH in docs
    for name in ORDER:
        assert f"configs/tiny/{name}.yaml" in docs


@pytest.mark.slow
def test_tiny_configs_run_from_a_fresh_clone(tmp_path, monkeypatch, capsys):
    for name in ("configs", "src"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    fast = ["--set", "max_steps=2", "--set", "batch_size=1", "--set", "cpu_threads=1", "--no-progress"]

    assert main(["train", "--config", "configs/tiny/stage1.yaml", *fast]) == 2
    err = capsys.readouterr().err
    assert "data.dataset folder data/tiny does not exist" in err
    assert re.search(r"`(magicmotion data synth [^`]+)`", err).group(1) == SYNTH
    assert main(shlex.split(SYNTH)[1:]) == 0

    assert main(["train", "--config", "configs/tiny/stage2.yaml", *fast]) == 2
    assert "train stage 1 first (`magicmotion train --config configs/tiny/stage1.yaml`)" in \
        capsys.readouterr().err

    for name in ORDER:
        assert main(["train", "--config", f"configs/tiny/{name}.yaml", *fast]) == 0, name
        final = tmp_path / "runs" / "tiny-train" / name / "final"
        assert (final / "controlnet" / "config.json").is_file()
        assert (final / "segment_head" / "config.json").is_file() == (name not in ("stage1", "stage2-no-seg"))
