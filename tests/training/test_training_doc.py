"""docs/training.md's "From one GPU to eight" path runs as written (issue 38), on tiny stand-ins: the two
`hf download` lines are replaced by writing, where they would land, a tiny base in the Wan2.1-Fun
release's layout (tests/models/wan_release.py) and a six-clip 64x64, 49-frame replica of MagicData
(benchmarks/import.py); configs/wan-1.3b/stage{1,2,3}.yaml are the shipped ones at 64x64, 2 steps and
2 precomputed sparse variants.
Every other command runs through the CLI exactly as the doc prints it. The doc's figures are checked
too: the effective-batch table, the disk estimate, and the stage times against `magicmotion plan`."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "training.md"
SECTION = "## From one GPU to eight: the whole path"
sys.path.insert(0, str(ROOT / "tests" / "models"))  # the tiny release-layout base (wan_release.py)


def section() -> str:
    text = DOC.read_text()
    start = text.index(SECTION)
    return text[start:text.index("\n## ", start + 1)]


def doc_commands() -> list[str]:
    """The section's ```bash block, comments dropped, continuation lines joined."""
    text = section()
    block = text[text.index("```bash\n") + 8:]
    block = block[:block.index("```")]
    commands, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].strip() + " "
            continue
        current += line.strip()
        if current and not current.startswith("#"):
            commands.append(current)
        current = ""
    return commands


def write_replica(root: Path) -> None:
    """Six 49-frame 64x64 clips (benchmarks/import.py's replica), renamed to video ids of which the
    importer's hash puts five in train and one in test (so the benchmark has a clip)."""
    import csv

    from magicmotion.data.curation.stages import split_of

    spec = importlib.util.spec_from_file_location("import_benchmark", ROOT / "benchmarks" / "import.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_replica(root, clips=6, frames=49, size=(64, 64), seed=1)
    ids = [f"{k:06d}" for k in range(5000)]
    train = [i for i in ids if split_of(i, 0.05) == "train"][:5]
    test = [i for i in ids if split_of(i, 0.05) == "test"][:1]
    renamed = dict(zip([f"{k:06d}" for k in range(6)], train + test))
    for old, new in sorted(renamed.items(), reverse=True):  # no new id is an old one still to move
        if old != new:
            (root / "videos" / f"{old}.mp4").rename(root / "videos" / f"{new}.mp4.tmp")
            for maps in ("masks", "boxs"):
                (root / maps / old).rename(root / maps / f"{new}.tmp")
    for new in renamed.values():
        if (root / "videos" / f"{new}.mp4.tmp").exists():
            (root / "videos" / f"{new}.mp4.tmp").rename(root / "videos" / f"{new}.mp4")
            for maps in ("masks", "boxs"):
                (root / maps / f"{new}.tmp").rename(root / maps / new)
    with open(root / "MagicData.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(root / "MagicData.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[renamed[r[0]], *r[1:]] for r in rows[1:]])


def stand_in_configs(folder: Path) -> None:
    """The shipped wan-1.3b stage configs at 64x64 and 2 optimiser steps (nothing else changed)."""
    for stage in (1, 2, 3):
        cfg = yaml.safe_load((ROOT / "configs" / "wan-1.3b" / f"stage{stage}.yaml").read_text())
        cfg["data"].update(size=[64, 64], num_workers=0, sparse_variants=2)
        cfg["loop"].update(max_steps=2, save_every=2, log_every=1)
        (folder / f"stage{stage}.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.slow
def test_training_doc_path_runs_on_tiny_stand_ins(tmp_path, monkeypatch, capsys):
    from wan_release import write_release

    from magicmotion.cli import main

    commands = doc_commands()
    heads = [" ".join(c.split()[:3]) for c in commands]
    assert heads == (["hf download alibaba-pai/Wan2.1-Fun-1.3B-InP", "hf download quanhaol/MagicData",
                      "magicmotion convert wan-fun", "magicmotion data import-magicdata", "magicmotion data info",
                      "magicmotion plan configs/wan-1.3b/stage1.yaml", "magicmotion train precompute"]
                     + ["magicmotion train --config"] * 3
                     + ["magicmotion bench build", "magicmotion bench run", "magicmotion bench score",
                        "magicmotion bench report"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "wan-1.3b").mkdir(parents=True)
    stand_in_configs(tmp_path / "configs" / "wan-1.3b")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared CPU
    try:
        for command in commands:
            words = shlex.split(command)
            if words[:2] == ["hf", "download"]:
                target = tmp_path / words[words.index("--local-dir") + 1]
                write_release(target) if words[2].startswith("alibaba-pai/") else write_replica(target)
                continue
            assert words[0] == "magicmotion"
            code = main(words[1:])
            assert code == 0, f"{command}\n{capsys.readouterr().err[-3000:]}"
        out = capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)

    assert "training, per GPU (encoded on the fly)" in out  # plan read the config's precomputed: null
    assert (tmp_path / "models" / "Wan2.1-Fun-1.3B-InP-Diffusers" / "model_index.json").is_file()
    index = json.loads((tmp_path / "latents" / "wan-1.3b" / "index.json").read_text())
    assert index["clips"]
    for stage in (1, 2, 3):
        final = tmp_path / "runs" / "wan-1.3b" / f"stage{stage}" / "final"
        assert (final / "controlnet" / "config.json").is_file()
        used = yaml.safe_load((final / "config.yaml").read_text())
        assert used["loop"]["grad_accum"] == 4 and used["data"]["precomputed"] == "latents/wan-1.3b"
    assert (tmp_path / "runs" / "wan-1.3b" / "stage3" / "final" / "segment_head").is_dir()
    assert any((tmp_path / "runs" / "bench-report").iterdir())


def test_effective_batch_table_keeps_the_papers_samples():
    """Every row: GPUs x batch x grad_accum x max_steps = 23,000 samples (the paper: 4 x 1 x 1 x 5750),
    and its command launches that many processes with those settings."""
    rows = [r for r in section().splitlines() if re.match(r"\| [18]|\| 4 ", r)]
    assert len(rows) == 3
    paper = yaml.safe_load((ROOT / "configs" / "wan-1.3b" / "stage1.yaml").read_text())["loop"]
    for row in rows:
        gpus, batch, accum, steps, effective, command = [c.strip() for c in row.strip("|").split("|")]
        gpus, batch, accum, steps = int(gpus), int(batch), int(accum), int(steps)
        assert gpus * batch * accum * steps == 4 * paper["max_steps"] == 23000, row
        assert effective.startswith(str(gpus * batch * accum))
        if gpus > 1:
            assert f"--num_processes {gpus}" in command
            assert (f"--set loop.max_steps={steps}" in command) == (steps != paper["max_steps"])
    assert "--set loop.grad_accum=4" in doc_commands()[7]


def test_disk_estimate_follows_from_the_latent_shapes():
    """~830 GB: 23K clips x (video + 10 trajectory latents of 16 x 13 x 60 x 104, a 20-channel image
    condition, a 512 x 4096 prompt) in bfloat16 (2 bytes)."""
    latent = 16 * 13 * 60 * 104
    per_clip = 2 * (11 * latent + 20 * 13 * 60 * 104 + 512 * 4096)
    assert round(23000 * per_clip / 1e9, -1) == 830
    assert "about 830 GB" in section()


def test_stage_times_are_what_plan_prints(tmp_path):
    from magicmotion.training.plan import format_plan, plan_from_config

    fly = format_plan(plan_from_config(str(ROOT / "configs" / "wan-1.3b" / "stage1.yaml")))
    cfg = yaml.safe_load((ROOT / "configs" / "wan-1.3b" / "stage1.yaml").read_text())
    cfg["data"]["precomputed"] = "latents/wan-1.3b"
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(cfg))
    pre = format_plan(plan_from_config(str(tmp_path / "pre.yaml")))
    rows = {r.split("|")[1].strip().split(" (")[0]: [c.strip() for c in r.split("|")[2:5]]
            for r in section().splitlines() if r.startswith("| precomputed") or r.startswith("| encoded")}
    for label, printed in (("precomputed latents", pre), ("encoded on the fly", fly)):
        times = re.search(r"1 GPU (\S+ h), 4 GPUs (\S+ h), 8 GPUs (\S+ h)", printed).groups()
        assert rows[label] == list(times), (label, times)
