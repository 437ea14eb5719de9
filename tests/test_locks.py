"""One run per output: a second run on a locked output exits 2 naming the holder, writing nothing."""

from __future__ import annotations

import os

import pytest

from magicmotion.cli import main
from magicmotion.errors import OutputLocked
from magicmotion.locks import lock_path, output_lock


def test_second_holder_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    with output_lock(out) as held:
        assert held == tmp_path / ".run.lock"
        with pytest.raises(OutputLocked, match=rf"run: output in use by another run \(pid {os.getpid()} on "):
            with output_lock(out):
                pass
    assert not held.exists()  # removed on release
    with output_lock(out):  # free again
        pass


def test_lock_of_an_output_in_a_missing_folder(tmp_path):
    assert lock_path(tmp_path / "a" / "b" / "out.mp4") == tmp_path / ".a__b__out.mp4.lock"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 2-clip dataset: training checks its videos exist before it takes the lock."""
    from magicmotion.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("locks") / "data"
    synthesize(root, clips=2, frames=9, size=(32, 32), seed=0, test_fraction=0.0, progress=False)
    return root


@pytest.mark.parametrize("argv", [
    ["train", "--config", "{config}"],
    ["train", "precompute", "--config", "{config}", "--out", "{out}"],
    ["bench", "run", "{tmp}/bench", "--out", "{out}"],  # inputs beside the output (one inside is refused first)
    ["data", "curate", "{tmp}/in.csv", "--out", "{out}"],
    ["generate", "--image", "examples/first_frame.png", "--trajectory", "examples/trajectory.json", "--prompt", "a",
     "--out", "{out}.mp4"],
])
def test_commands_refuse_a_locked_output(argv, tmp_path, capsys, dataset):
    out = tmp_path / ("out.mp4" if "generate" in argv else "out")
    config = tmp_path / "c.yaml"
    config.write_text(f"base: src/magicmotion/assets/tiny/base\noutput_dir: {out}\ndata: {{dataset: {dataset}, "
                      "num_frames: 9, size: [32, 32]}\n")
    argv = [a.format(config=config, out=tmp_path / "out", tmp=tmp_path) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    with output_lock(out):
        assert main(argv) == 2
        before.append(f".{out.name}.lock")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another run (pid" in err[0], err
