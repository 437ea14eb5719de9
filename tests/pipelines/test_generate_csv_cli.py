"""`magicmotion generate --csv`: the authors' release's CSV columns (and ours) through the real CLI with
the shipped tiny model: every good row written, bad rows reported by line, a second run resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pipelines_helpers import make_blob_trajectory, make_image, make_trajectory

from magicmotion.cli import main
from magicmotion.io import read_video, write_video
from magicmotion.trajectory import render, save


def test_release_csv_runs_every_good_row_and_resumes(tmp_path, capsys):
    Image.fromarray(make_image(64)).save(tmp_path / "first.png")
    spec = make_trajectory(64, frames=9)
    save(spec, tmp_path / "spec.json")
    write_video(tmp_path / "maps.mp4", render(make_blob_trajectory(24, 64), "mask", palette="release"), fps=8)
    csv = tmp_path / "demo.csv"
    csv.write_text(
        "validation_prompt,validation_images,validation_trajectory_maps,output_path,controlnet_weights,seed\n"
        "a shape,first.png,spec.json,out/a.mp4,1.0,1\n"
        "a shape,missing.png,spec.json,out/b.mp4,1.0,2\n"
        "a shape,first.png,maps.mp4,out/c.mp4,0.5,3\n")
    argv = ["generate", "--csv", str(csv), "--steps", "1"]
    assert main(argv) == 2  # one bad row
    err = capsys.readouterr().err
    assert "line 3" in err and "missing.png" in err
    a = json.loads((tmp_path / "out" / "a.json").read_text())
    c = json.loads((tmp_path / "out" / "c.json").read_text())
    assert (a["seed"], a["kind"], a["control_scale"]) == (1, "box", 1.0)
    assert (c["seed"], c["kind"], c["control_scale"]) == (3, "mask", 0.5)  # the maps' kind, the row's scale
    assert "release palette" in c["redrawn"]
    assert read_video(tmp_path / "out" / "a.mp4")[0].shape[0] == 9
    assert not (tmp_path / "out" / "b.mp4").exists()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert main(argv) == 2
    assert "2 skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before


def test_csv_and_single_video_flags_do_not_mix(tmp_path, capsys):
    csv = tmp_path / "x.csv"
    csv.write_text("prompt,image,trajectory,out\n")
    assert main(["generate", "--csv", str(csv), "--prompt", "x"]) == 2
    assert "drop --prompt" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x"]) == 2
    assert "--image, --trajectory, --out required" in capsys.readouterr().err


@pytest.mark.parametrize("columns", ["60", "80", "100", "140"])
def test_csv_help_wraps_between_words(columns, monkeypatch, capsys):
    """Issue 38: `--csv`'s help broke `validation_trajectory_maps` across two lines; every column name
    it lists now stays whole at any terminal width (argparse wraps at COLUMNS)."""
    from magicmotion.cli import main

    monkeypatch.setenv("COLUMNS", columns)
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = capsys.readouterr().out
    words = set(help_text.split())
    for name in ("validation_prompt,", "validation_images,", "validation_trajectory_maps,", "output_path,",
                 "controlnet_weights,", "control_scale,"):
        assert name in words, (name, columns)
