"""The released MagicBench: a replica in MagicData's layout (maps drawn with supervision + OpenCV,
tests/magicdata_replica.py) imports into a benchmark set with its published buckets and runs, scores
and reports end to end; a folder in another layout is refused with what it holds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from magicdata_replica import draw_clip, random_scene, write_release

from magicmotion.bench.magicbench import detect_layout, import_magicbench
from magicmotion.cli import main
from magicmotion.data.dataset import read_index
from magicmotion.errors import BenchError

FRAMES = 9


@pytest.fixture(scope="module")
def magicbench(tmp_path_factory):
    """Six clips, 1..3 objects (two per count), 160x120, 9 frames; the CSV publishes the counts."""
    root = tmp_path_factory.mktemp("MagicBench")
    rows = []
    for k in range(6):
        n = 1 + k % 3
        rng = np.random.default_rng([12, k])
        while True:  # every object on frame 0 (the replica may start one half off the frame)
            full = random_scene(rng, size=(160, 120), frames=FRAMES, n_objects=n, min_area=0.01)
            clip = draw_clip(full)
            if all((clip.visible[0] == i).any() for i in clip.ids):
                break
        write_release(root, f"mb{k:03d}", clip)
        rows.append((f"mb{k:03d}", f"{n} things moving", n))
    with open(root / "MagicBench.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "caption", "num_objects"])
        w.writerows(rows)
    return root


def test_imports_runs_scores_and_reports(magicbench, tmp_path, capsys):
    bench = tmp_path / "bench"
    assert main(["bench", "import-magicbench", str(magicbench), "--out", str(bench), "--frames",
                 str(FRAMES), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "6 clips of MagicBench" in printed and "published in column 'num_objects'" in printed
    info = json.loads((bench / "bench.json").read_text())
    assert info["buckets"] == {"1": 2, "2": 2, "3": 2, "4": 0, "5": 0, "6+": 0}
    assert info["bucket_mismatch"] == [] and info["source"]["imported"] == 6
    records = read_index(bench)
    assert sorted(r["source_clip"] for r in records) == [f"mb{k:03d}" for k in range(6)]
    assert {r["id"]: r["bucket"] for r in records} == {f"mb{k:03d}": str(1 + k % 3) for k in range(6)}
    run, rep = tmp_path / "gt", tmp_path / "report"
    assert main(["bench", "run", str(bench), "--out", str(run), "--ground-truth"]) == 0
    assert main(["bench", "score", str(run), "--segmenter", "classic"]) == 0
    assert main(["bench", "report", str(run), "--out", str(rep)]) == 0
    scores = json.loads((run / "scores.json").read_text())
    assert scores["overall"]["clips"] == 6
    assert set(k for k, v in scores["buckets"].items() if v["clips"]) == {"1", "2", "3"}
    assert "Mask IoU" in (rep / "report.md").read_text()


def test_published_bucket_wins_and_mismatch_is_listed(magicbench, tmp_path):
    alt = tmp_path / "alt"
    alt.mkdir()
    for name in ("videos", "masks", "boxs"):
        (alt / name).symlink_to(magicbench / name)
    text = (magicbench / "MagicBench.csv").read_text().replace("mb000,1 things moving,1",
                                                               "mb000,1 things moving,6+")
    (alt / "MagicBench.csv").write_text(text)
    s = import_magicbench(alt, tmp_path / "bench", num_frames=FRAMES, progress=False)
    assert s["buckets"]["6+"] == 1 and s["buckets"]["1"] == 1
    assert s["bucket_mismatch"] == [{"id": "mb000", "published": 6, "decoded": 1}]


def test_another_layout_is_refused_with_what_was_found(tmp_path, capsys):
    root = tmp_path / "MagicBench"
    (root / "1_object" / "clip0").mkdir(parents=True)
    (root / "2_objects").mkdir()
    (root / "metadata.jsonl").write_text("{}\n")
    with pytest.raises(BenchError, match=r"not in the layout this reader knows \(no CSV listing the "
                                         r"videos; no videos/, masks/, boxs/\); found: 1_object/ "
                                         r"\(1 entries\), 2_objects/ \(0 entries\), metadata.jsonl"):
        detect_layout(root)
    out = tmp_path / "bench"
    assert main(["bench", "import-magicbench", str(root), "--out", str(out), "--quiet"]) == 2
    assert "found: 1_object/" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bench-dataset").exists()
