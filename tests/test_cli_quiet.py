"""Commands print no library warnings (issue 24): transformers' "`CLIPImageProcessor` requires
torchvision" on every import of the Wan pipelines, huggingface_hub deprecations, ... are filtered where
they are known and harmless (magicmotion.logfilters); anything new shows up here."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WARNING = re.compile(r"warn", re.IGNORECASE)


def run(args, tmp_path, module=True):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "HF_ENDPOINT")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    cmd = [sys.executable, "-m", "magicmotion", *args] if module else [sys.executable, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["data", "curate", "--help"], ["bench", "run", "--help"]])
def test_help_prints_no_warnings(args, tmp_path):
    out = run(args, tmp_path)
    assert out.returncode == 0 and not WARNING.search(out.stderr), out.stderr


def test_trajectory_render_prints_no_warnings(tmp_path):
    out = run(["trajectory", "render", "examples/trajectory.json", "--kind", "box",
               "--out", str(tmp_path / "maps.mp4")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert not WARNING.search(out.stderr), out.stderr


@pytest.mark.slow
def test_loading_the_pipelines_prints_no_torchvision_warning(tmp_path):
    """Importing the Wan pipeline builds CLIPImageProcessor, which transformers warns about without
    torchvision; the generate command stops at the (offline, uncached) base in one error line."""
    out = run(["-c", "import magicmotion.pipelines.pipeline_wan, magicmotion.pipelines.pipeline_cogvideox"],
              tmp_path, module=False)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    out = run(["generate", "--base", "some-org/some-model", "--controlnet", "some-org/cn", "--image",
               "examples/first_frame.png", "--trajectory", "examples/trajectory.json", "--kind", "box",
               "--prompt", "x", "--out", str(tmp_path / "v.mp4")], tmp_path)
    assert out.returncode == 2 and not WARNING.search(out.stderr), out.stderr
