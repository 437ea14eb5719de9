"""README.md's first command block runs as written from a fresh clone: every command exits 0, none
prints a Python warning, and each leaves what it says it writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WARNING = re.compile(r"\b\w*Warning\b|^\s*warnings\.warn", re.M)


def readme_commands() -> list[str]:
    """The commands of the first ```bash block under '## Command line', continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Command line"):]
    block = section[section.index("```bash\n") + 8:]
    block = block[:block.index("```")]
    commands, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip() and not current.strip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def test_readme_block_is_the_documented_tour():
    commands = readme_commands()
    assert all(c.startswith("magicmotion ") for c in commands)
    used = {c.split()[1] for c in commands}
    assert {"trajectory", "generate", "data", "train", "bench", "demo"} <= used


@pytest.mark.slow
def test_readme_commands_run_top_to_bottom(tmp_path):
    for name in ("examples", "configs", "src"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "outputs").mkdir()  # as `make demo` leaves it
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONWARNINGS="default")
    for command in readme_commands():
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        assert not WARNING.search(done.stderr), f"{command}\n{WARNING.search(done.stderr).group(0)}: " \
                                                f"{done.stderr[-2000:]}"
    for path in ("outputs/maps.mp4", "outputs/from-maps.json", "outputs/overlay.png", "outputs/video.mp4",
                 "data/synth-kept", "outputs/report", "outputs/demo/demo.json"):
        assert (tmp_path / path).exists(), path
