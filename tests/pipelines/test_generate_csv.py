"""`magicmotion generate --csv`: reading generation CSVs (ours and the release's), resuming, bad and failing
rows reported by line, and rows split across processes. A fake `generate_row` writes a small file at
the output path; no model runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from shared_helpers import run_two_ranks

from magicmotion.errors import ConfigError, PipelineError
from magicmotion.pipelines.batch import (exit_code, make_row_generator, process_split, read_rows, run_csv,
                                         summary_line)

RELEASE_HEADER = "validation_prompt,validation_images,validation_trajectory_maps,output_path,controlnet_weights,seed"


def make_inputs(folder: Path, names=("a", "b", "c", "d")) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "maps").mkdir(exist_ok=True)
    for n in names:
        (folder / "images" / f"{n}.png").write_bytes(b"png")
        (folder / "maps" / f"{n}.mp4").write_bytes(b"mp4")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]))  # the release's files end without a newline
    return path


def ours(rows: list[str], folder: Path, name="rows.csv") -> Path:
    return write_csv(folder / name, "prompt,image,trajectory,out,controlnet,seed,kind", rows)


class Recorder:
    """A `generate_row` that writes the row's prompt at its output path; `fail` lines raise PipelineError."""

    def __init__(self, fail=()):
        self.calls, self.fail = [], set(fail)

    def __call__(self, row):
        self.calls.append(row)
        if row.line in self.fail:
            raise PipelineError(f"{row.trajectory}: the trajectory has 10 frames")
        row.out.write_text(row.prompt)


def test_release_csv_read_like_the_release(tmp_path):
    # the release's layout: the CSV three folders down, paths from the repository root
    repo = tmp_path / "release"
    (repo / "assets/images/condition").mkdir(parents=True)
    (repo / "assets/box_trajectory").mkdir(parents=True)
    for n in ("cartoon_wizard", "floatie"):
        (repo / f"assets/images/condition/{n}.jpg").write_bytes(b"jpg")
        (repo / f"assets/box_trajectory/{n}.mp4").write_bytes(b"mp4")
    csv_path = write_csv(repo / "magicmotion/validation_args/demo/demo_box.csv", RELEASE_HEADER, [
        "Two cartoon wizards walking towards each other,assets/images/condition/cartoon_wizard.jpg,"
        "assets/box_trajectory/cartoon_wizard.mp4,samples/demo/stage2/cartoon_wizard.mp4,1.0,42",
        "A unicorn floatie floating in a pool,assets/images/condition/floatie.jpg,"
        "assets/box_trajectory/floatie.mp4,samples/demo/stage2/floatie.mp4,0.5,18",
    ])
    rows = read_rows(csv_path)
    assert [r.problem for r in rows] == [None, None]
    first, second = rows
    assert first.line == 2 and first.prompt == "Two cartoon wizards walking towards each other"
    assert first.image.resolve() == (repo / "assets/images/condition/cartoon_wizard.jpg").resolve()
    assert first.trajectory.resolve() == (repo / "assets/box_trajectory/cartoon_wizard.mp4").resolve()
    assert first.out.resolve() == (repo / "samples/demo/stage2/cartoon_wizard.mp4").resolve()
    # controlnet_weights is the control scale; the checkpoint and kind are the CLI's
    assert (first.control_scale, first.seed, first.controlnet, first.kind) == (1.0, 42, None, None)
    assert (second.control_scale, second.seed) == (0.5, 18)
    # output folders are made, as the release does
    summary = run_csv(csv_path, Recorder(), progress=False)
    assert summary["done"] == [2, 3] and exit_code(summary) == 0
    assert (repo / "samples/demo/stage2/floatie.mp4").read_text() == "A unicorn floatie floating in a pool"


def test_our_columns_relative_to_the_csv_folder(tmp_path, monkeypatch):
    make_inputs(tmp_path / "job")
    (tmp_path / "job" / "cn").mkdir()
    monkeypatch.chdir(tmp_path)  # not the CSV's folder
    csv_path = ours([
        'a prompt,images/a.png,maps/a.mp4,out/a.mp4,cn,7,mask',
        f'"quoted ""b""",{tmp_path}/job/images/b.png,maps/b.mp4,out/,org/some-controlnet,,',
        ' spaced , images/c.png , maps/c.mp4 , out/c , , 1e3 , sparse_box ',
    ], tmp_path / "job")
    a, b, c = read_rows(csv_path)
    assert [r.problem for r in (a, b, c)] == [None, None, None]
    job = tmp_path / "job"
    assert a.prompt == "a prompt"
    assert a.image == job / "images/a.png" and a.out == job / "out/a.mp4"
    assert (a.controlnet, a.seed, a.kind) == (str(job / "cn"), 7, "mask")  # a folder under the CSV's folder
    assert b.prompt == 'quoted "b"' and b.image == job / "images/b.png"
    # a folder output: the trajectory's name; a controlnet not under the CSV's folder is kept (a hub id)
    assert b.out == job / "out/b.mp4" and (b.controlnet, b.seed, b.kind) == ("org/some-controlnet", None, None)
    assert c.prompt == "spaced" and c.out == job / "out/c/c.mp4" and (c.seed, c.kind) == (1000, "sparse_box")


def test_a_comma_in_an_unquoted_prompt_makes_a_bad_row(tmp_path):
    make_inputs(tmp_path)
    csv_path = ours(["a prompt, with a comma,images/a.png,maps/a.mp4,a.mp4,,,"], tmp_path)
    (row,) = read_rows(csv_path)
    assert row.problem == "8 cells, the header has 7"


def test_resume_skips_existing_outputs(tmp_path):
    make_inputs(tmp_path)
    csv_path = ours([f"p {n},images/{n}.png,maps/{n}.mp4,out/{n}.mp4,,{i},box" for i, n in enumerate("abc")],
                    tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/b.mp4").write_text("made before")
    first = Recorder()
    summary = run_csv(csv_path, first, progress=False)
    assert summary["done"] == [2, 4] and summary["skipped"] == [3] and summary["rows"] == 3
    assert [r.line for r in first.calls] == [2, 4] and (tmp_path / "out/b.mp4").read_text() == "made before"
    again = Recorder()
    summary = run_csv(csv_path, again, progress=False)
    assert again.calls == [] and summary["skipped"] == [2, 3, 4] and summary["done"] == []
    assert exit_code(summary) == 0


def test_bad_rows_reported_by_line_and_good_rows_still_run(tmp_path, capsys):
    make_inputs(tmp_path)
    csv_path = ours([
        "ok,images/a.png,maps/a.mp4,out/a.mp4,,1,",
        "no image,images/missing.png,maps/b.mp4,out/b.mp4,,1,",
        "bad seed,images/b.png,maps/b.mp4,out/b.mp4,,abc,",
        "same output,images/c.png,maps/c.mp4,out/a.MP4,,2,",
        "not mp4,images/c.png,maps/c.mp4,out/c.gif,,2,",
        "bad kind,images/c.png,maps/c.mp4,out/c.mp4,,2,boxes",
        "no map,images/d.png,maps/missing.mp4,out/d.mp4,,3,",
        "overwrites its maps,images/d.png,maps/d.mp4,maps/,,3,",
        "ok too,images/d.png,maps/d.mp4,out/d.mp4,,3,",
    ], tmp_path)
    recorder = Recorder()
    summary = run_csv(csv_path, recorder, progress=False)
    assert [r.line for r in recorder.calls] == [2, 10] and summary["done"] == [2, 10]
    bad = dict(summary["bad"])
    assert sorted(bad) == [3, 4, 5, 6, 7, 8, 9]
    assert "missing.png not found" in bad[3]
    assert bad[4] == "seed must be a whole number in 0..2^32-1, got 'abc'"
    assert "is also the output of line 2" in bad[5]
    assert "must be an .mp4 file or a folder" in bad[6]
    assert "unknown kind 'boxes'" in bad[7]
    assert "missing.mp4 not found" in bad[8]
    assert "would overwrite an input" in bad[9]  # maps/ + d's name is maps/d.mp4, its own trajectory
    assert exit_code(summary) == 2
    err = capsys.readouterr().err
    assert f"{csv_path} line 4: seed must be a whole number" in err
    assert err.strip().endswith(summary_line(summary))
    assert summary_line(summary) == f"{csv_path}: 2 done, 0 skipped (output exists), 0 failed, 7 bad of 9 rows"


@pytest.mark.parametrize("seed, problem", [("-1", "got '-1'"), ("4294967296", "got '4294967296'"),
                                           ("1.5", "got '1.5'"), ("nan", "got 'nan'")])
def test_seed_out_of_range(tmp_path, seed, problem):
    make_inputs(tmp_path)
    (row,) = read_rows(ours([f"p,images/a.png,maps/a.mp4,a.mp4,,{seed},"], tmp_path))
    assert problem in row.problem


def test_a_checkpoint_in_controlnet_weights_is_a_bad_row(tmp_path):
    make_inputs(tmp_path)
    csv_path = write_csv(tmp_path / "demo.csv", RELEASE_HEADER, ["p,images/a.png,maps/a.mp4,a.mp4,ckpts/box.pt,1"])
    (row,) = read_rows(csv_path)
    assert "must be a number such as 1.0" in row.problem and "'controlnet' column" in row.problem


def test_a_failing_row_is_reported_and_the_rest_run(tmp_path, capsys):
    make_inputs(tmp_path)
    csv_path = ours([f"p {n},images/{n}.png,maps/{n}.mp4,{n}.mp4,,,box" for n in "abc"], tmp_path)
    recorder = Recorder(fail={3})
    summary = run_csv(csv_path, recorder, progress=False)
    assert summary["done"] == [2, 4] and len(recorder.calls) == 3
    assert summary["failed"] == [(3, f"{tmp_path / 'maps/b.mp4'}: the trajectory has 10 frames")]
    assert not (tmp_path / "b.mp4").exists() and exit_code(summary) == 2
    assert f"{csv_path} line 3: {tmp_path / 'maps/b.mp4'}: the trajectory has 10 frames" in capsys.readouterr().err
    # a retry runs only the failed row
    retry = Recorder()
    assert run_csv(csv_path, retry, progress=False)["done"] == [3] and [r.line for r in retry.calls] == [3]


def test_other_exceptions_propagate(tmp_path):
    make_inputs(tmp_path)
    csv_path = ours(["p,images/a.png,maps/a.mp4,a.mp4,,,"], tmp_path)

    def buggy(row):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run_csv(csv_path, buggy, progress=False)


@pytest.mark.parametrize("header, message", [
    ("prompt,image,trajectory,output", "unknown column(s) 'output'"),
    ("prompt,image,trajectory", "missing column(s) for out"),
    ("prompt,validation_prompt,image,trajectory,out", "column(s) for prompt given more than once"),
    ("", "empty CSV"),
])
def test_bad_header_is_an_error_naming_the_file_and_the_columns(tmp_path, header, message):
    csv_path = write_csv(tmp_path / "x.csv", header, [])
    with pytest.raises(ConfigError) as e:
        read_rows(csv_path)
    assert str(e.value).startswith(str(csv_path)) and message in str(e.value)
    assert "prompt,image,trajectory,out" in str(e.value) and RELEASE_HEADER.split(",")[0] in str(e.value)


def test_header_case_spaces_and_byte_order_mark(tmp_path):
    make_inputs(tmp_path)
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff Prompt ,IMAGE,Trajectory,Out\r\np,images/a.png,maps/a.mp4,a.mp4\r\n\r\n".encode())
    (row,) = read_rows(path)
    assert row.problem is None and row.line == 2 and row.out == tmp_path / "a.mp4"


def test_unreadable_files(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("prompt,image,trajectory,out\ncaf\xe9,a.png,a.mp4,a.mp4\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path}: not UTF-8"):
        read_rows(path)
    with pytest.raises(ConfigError, match="CSV not found"):
        read_rows(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="process 2 of 2"):
        run_csv(path, Recorder(), process_index=2, num_processes=2)


def test_two_processes_cover_every_row_once(tmp_path):
    names = "abcdefg"
    make_inputs(tmp_path, names)
    rows = [f"p {n},images/{n}.png,maps/{n}.mp4,{n}.mp4,,,box" for n in names]
    rows[2] = "bad,images/missing.png,maps/c.mp4,c.mp4,,,box"
    csv_path = ours(rows, tmp_path)
    summaries = [run_csv(csv_path, Recorder(), process_index=i, num_processes=2, progress=False) for i in (0, 1)]
    lines = [set(s["done"]) | {line for line, _ in s["bad"]} for s in summaries]
    assert lines[0] == {2, 4, 6, 8} and lines[1] == {3, 5, 7}  # row i to process i % 2, bad rows too
    assert summaries[0]["bad"][0][0] == 4 and summaries[1]["bad"] == []
    assert "(process 2 of 2)" in summary_line(summaries[1])


def test_process_split_without_a_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert process_split() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert process_split() == (0, 1)


SCRIPT = """
import sys
from magicmotion.pipelines.batch import process_split, run_csv, exit_code

def generate_row(row):
    with open(row.out, "a") as f:
        f.write(f"{index}\\n")

index, count = process_split()
summary = run_csv(sys.argv[1], generate_row, process_index=index, num_processes=count, progress=False)
sys.exit(exit_code(summary))
"""


@pytest.mark.slow
def test_two_launched_processes_write_each_output_once(tmp_path):
    # torchrun-style environment set by hand; accelerate's PartialState makes the (gloo) process group
    make_inputs(tmp_path)
    csv_path = ours([f"p {n},images/{n}.png,maps/{n}.mp4,out/{n}.mp4,,,box" for n in "abcd"], tmp_path)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    run_two_ranks([sys.executable, str(script), str(csv_path)], timeout=60)
    written = {n: (tmp_path / "out" / f"{n}.mp4").read_text() for n in "abcd"}
    assert written == {"a": "0\n", "b": "1\n", "c": "0\n", "d": "1\n"}  # each once, by its process


def test_row_generator_loads_once_per_controlnet(tmp_path):
    make_inputs(tmp_path)
    csv_path = ours([f"p {n},images/{n}.png,maps/{n}.mp4,{n}.mp4,{cn},,box"
                     for n, cn in zip("abcd", ["", "", "other", ""])], tmp_path)
    loads, runs = [], []

    def load(controlnet):
        loads.append(controlnet)
        return {"controlnet": controlnet}

    def run_one(pipe, row):
        runs.append((pipe["controlnet"], row.line))
        row.out.write_text("v")

    summary = run_csv(csv_path, make_row_generator(load, run_one), progress=False)
    assert summary["done"] == [2, 3, 4, 5]
    assert loads == [None, "other", None]  # one held at a time, in row order
    assert runs == [(None, 2), (None, 3), ("other", 4), (None, 5)]


def test_row_generator_retries_a_failed_load(tmp_path):
    make_inputs(tmp_path)
    csv_path = ours([f"p {n},images/{n}.png,maps/{n}.mp4,{n}.mp4,,,box" for n in "ab"], tmp_path)
    loads = []

    def load(controlnet):
        loads.append(controlnet)
        if len(loads) == 1:
            raise PipelineError("ckpt: cannot be loaded")
        return "pipe"

    summary = run_csv(csv_path, make_row_generator(load, lambda pipe, row: row.out.write_text(pipe)), progress=False)
    assert summary["failed"] == [(2, "ckpt: cannot be loaded")] and summary["done"] == [3] and len(loads) == 2
