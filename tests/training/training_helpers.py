"""Helpers for the training tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

FRAMES, SIZE = 9, (32, 32)


def config_dict(base: Path, dataset: Path, output_dir: Path, model: str = "wan", **overrides) -> dict:
    """A tiny stage-1 config as a nested dict; `overrides` use dotted keys (`loop.max_steps=3`)."""
    data = {
        "model": model, "base": str(base), "output_dir": str(output_dir), "stage": 1, "condition": "mask",
        "seed": 0,
        "data": {"dataset": str(dataset), "num_frames": FRAMES, "size": list(SIZE), "sampling": "start",
                 "image_dropout": 0.0, "sparse_variants": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "loop": {"max_steps": 2, "mixed_precision": "no", "log_every": 1, "save_every": 0,
                 "tensorboard": False},
        "validation": {"num_inference_steps": 2},
    }
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


def killed_then_resumed(config, kill_at: int):
    """Train `config` until the callback of step `kill_at` kills it (as a crash would), then resume it
    to the end; returns (the checkpoint resume started from, the resumed run's result)."""
    import pytest

    from magicmotion.training.checkpoints import latest_checkpoint
    from magicmotion.training.trainer import train

    class Killed(Exception):
        pass

    def kill(step, row):
        if step == kill_at:
            raise Killed

    with pytest.raises(Killed):
        train(config, progress=False, callback=kill)
    checkpoint = latest_checkpoint(config.output_dir)
    return checkpoint, train(config, resume=True, progress=False)
