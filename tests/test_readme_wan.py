"""README.md's Wan2.1-Fun-1.3B-InP example runs as written, on a tiny release folder: `hf download` is
replaced by writing a tiny folder in the release's layout where it would land, the training commands by
a ControlNet where stage 3 would leave it (the commands themselves are checked against the configs they
name), `first.png` / `spec.json` are tiny files of those names, and generate gets `--steps 2`; the
convert and generate commands run in-process through the CLI exactly as README prints them."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))  # the tiny release-layout builders (wan_release.py)
sys.path.insert(0, str(ROOT / "tests" / "pipelines"))  # a tiny first frame and trajectory


def readme_wan_commands() -> list[str]:
    """The commands README prints under its '# Wan2.1-Fun-1.3B-InP' comment, continuation lines joined,
    up to the next blank line."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("# Wan2.1-Fun-1.3B-InP"):]
    block = block[:block.index("\n\n")]
    commands, current = [], ""
    for line in block.splitlines():
        if line.startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].strip() + " "
            continue
        commands.append((current + line.strip()).strip())
        current = ""
    return commands


def test_readme_wan_fun_example_runs(tmp_path, monkeypatch):
    from pipelines_helpers import make_image, make_trajectory
    from wan_release import write_release

    from magicmotion.cli import main
    from magicmotion.io import read_video
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.trajectory import save

    commands = readme_wan_commands()
    assert [c.split()[:2] for c in commands] == [["hf", "download"], ["magicmotion", "convert"]] + \
        [["magicmotion", "train"]] * 3 + [["magicmotion", "generate"]]
    download, convert, *trains, generate = map(shlex.split, commands)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared CPU
    try:
        # hf download REPO --local-dir DIR: the id is the release, the folder is what convert reads
        assert download[2] == "alibaba-pai/Wan2.1-Fun-1.3B-InP" and download[3] == "--local-dir"
        release = download[4]
        hf_help = subprocess.run([str(Path(sys.executable).parent / "hf"), "download", "--help"],
                                 capture_output=True, text=True)
        assert hf_help.returncode == 0 and "--local-dir" in hf_help.stdout
        write_release(tmp_path / release)

        # magicmotion convert wan-fun, as written
        assert convert[1:3] == ["convert", "wan-fun"] and convert[3] == release
        assert main(convert[1:]) == 0
        converted = convert[convert.index("--out") + 1]
        assert (tmp_path / converted / "image_encoder" / "config.json").is_file()

        # the training commands: each config trains on the converted folder, stage 3 ends where generate reads
        configs = [yaml.safe_load((ROOT / t[t.index("--config") + 1]).read_text()) for t in trains]
        assert [c["stage"] for c in configs] == [1, 2, 3]
        assert {c["base"] for c in configs} == {converted}
        assert generate[generate.index("--base") + 1] == converted
        controlnet = generate[generate.index("--controlnet") + 1]
        assert controlnet == f"{configs[-1]['output_dir']}/final/controlnet"
        from diffusers import WanTransformer3DModel

        base = WanTransformer3DModel.from_pretrained(tmp_path / converted, subfolder="transformer")
        WanTrajectoryControlNet.from_transformer(base).save_pretrained(tmp_path / controlnet)

        # magicmotion generate, as written (plus --steps 2), on tiny first.png / spec.json
        Image.fromarray(make_image()).save(tmp_path / generate[generate.index("--image") + 1])
        save(make_trajectory(), tmp_path / generate[generate.index("--trajectory") + 1])
        assert main(generate[1:] + ["--steps", "2"]) == 0
        frames, _ = read_video(tmp_path / generate[generate.index("--out") + 1])
        assert frames.shape == (9, 32, 32, 3) and np.ptp(frames) > 0
    finally:
        torch.set_num_threads(threads)


def test_readme_wan_14b_example_names_the_14b_configs():
    text = (ROOT / "README.md").read_text()
    line = re.search(r"magicmotion generate --base Wan-AI/Wan2\.1-I2V-14B-480P-Diffusers \\\n\s+--controlnet (\S+)",
                     text)
    assert line, "README: the Wan2.1-I2V-14B-480P generate example"
    stage3 = yaml.safe_load((ROOT / "configs" / "wan2.1-14b-480p" / "stage3.yaml").read_text())
    assert line.group(1) == f"{stage3['output_dir']}/final/controlnet"
    assert stage3["base"] == "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
