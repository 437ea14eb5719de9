"""`bench run` split across processes (accelerate launch / torchrun): each process its own clips, one
run folder, resumable; two CPU processes with a torchrun-style environment."""

from __future__ import annotations

import json
import sys

import pytest
from bench_helpers import frozen, recording
from shared_helpers import run_two_ranks

from magicmotion.bench.runner import RUN_INFO, VIDEOS, bench_records, run_bench
from magicmotion.errors import BenchError


def test_each_process_runs_its_share(bench_set, tmp_path):
    ids = [r["id"] for r in bench_records(bench_set)][:5]
    out = tmp_path / "run"
    calls = [[], []]
    # process 0 first (it sets the folder up), then process 1; no barrier needed in one process
    for i in (0, 1):
        s = run_bench(bench_set, out, generate_fn=recording(calls[i]), limit=5, progress=False,
                      process_index=i, num_processes=2)
        assert s["clips"] == len(calls[i])
        complete = json.loads((out / RUN_INFO).read_text())["complete"]
        assert complete is False  # process 0 marks it only when every clip is there
    assert calls == [ids[0::2], ids[1::2]]
    # a rerun of process 0 finds everything done and marks the run complete
    s = run_bench(bench_set, out, generate_fn=recording(calls[0]), limit=5, progress=False,
                  process_index=0, num_processes=2)
    assert s["generated"] == 0 and json.loads((out / RUN_INFO).read_text())["complete"] is True
    with pytest.raises(BenchError, match="process 2 of 2"):
        run_bench(bench_set, out, generate_fn=frozen, limit=5, process_index=2, num_processes=2)


SCRIPT = """
import sys
from magicmotion.bench.runner import run_bench
from magicmotion.pipelines.batch import process_split, wait_for_everyone
import numpy as np

index, count = process_split()

def generate(clip, trajectory):
    with open(sys.argv[3], "a") as f:
        f.write(f"{index} {clip.caption}\\n")
    return np.repeat(clip.frames[:1], len(clip.frames), axis=0)

s = run_bench(sys.argv[1], sys.argv[2], generate_fn=generate, limit=4, progress=False,
              process_index=index, num_processes=count, wait_for_others=wait_for_everyone)
print(s)
"""


@pytest.mark.slow
def test_two_launched_processes_write_each_clip_once(bench_set, tmp_path):
    script, out, log = tmp_path / "run.py", tmp_path / "run", tmp_path / "calls.txt"
    script.write_text(SCRIPT)

    def launch():
        run_two_ranks([sys.executable, str(script), str(bench_set), str(out), str(log)], timeout=120)

    launch()
    calls = log.read_text().splitlines()
    assert sorted(c.split()[0] for c in calls) == ["0", "0", "1", "1"]  # two clips each
    ids = [r["id"] for r in bench_records(bench_set)][:4]
    assert sorted(p.stem for p in (out / VIDEOS).glob("*.mp4")) == sorted(ids)  # each once, one folder
    assert json.loads((out / RUN_INFO).read_text())["complete"] is True
    launch()  # resumed: nothing left to do
    assert len(log.read_text().splitlines()) == 4


def test_context_parallel_every_process_makes_every_clip_rank0_writes(bench_set, tmp_path, monkeypatch):
    """With context_parallel, all processes make every clip together (each call of the generator is one
    split video); rank 0 sets the folder up and writes, the others write nothing. Ranks one after
    the other in one process, rank 0 first (it sets the folder up; no barrier needed here)."""
    ids = [r["id"] for r in bench_records(bench_set)][:3]
    out = tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    calls = [[], []]
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        before = {p: p.stat().st_mtime_ns for p in out.rglob("*")} if out.exists() else {}
        if rank == 1:  # rank 1 finds the clips still to make, as it does beside rank 0 in a launch
            for video in (out / VIDEOS).glob("*.mp4"):
                video.unlink()
            before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
        s = run_bench(bench_set, out, generate_fn=recording(calls[rank]), limit=3, progress=False,
                      context_parallel="ulysses", wait_for_others=lambda: None)
        assert s["generated"] == 3
        if rank == 1:
            assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written or touched
    assert calls == [ids, ids]
    assert json.loads((out / RUN_INFO).read_text())["complete"] is True  # marked by rank 0
