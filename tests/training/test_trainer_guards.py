"""Training refuses to go wrong quietly: non-finite losses stop it, non-finite weights are never saved,
a finished output folder needs --resume or --overwrite, damaged checkpoints are skipped on resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magicmotion.errors import ConfigError, TrainingError
from magicmotion.training.checkpoints import list_checkpoints
from magicmotion.training.objective import TrainingObjective
from magicmotion.training.trainer import train


def test_nan_loss_stops_with_the_step_and_leaves_nothing(make_config, wan_precomputed, monkeypatch):
    config = make_config(**{"data.precomputed": str(wan_precomputed), "loop.max_steps": 3, "loop.save_every": 1})
    real = TrainingObjective.__call__
    calls = []

    def nan_on_second(self, model, batch, generator):
        terms = real(self, model, batch, generator)
        calls.append(1)
        if len(calls) == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(TrainingObjective, "__call__", nan_on_second)
    with pytest.raises(TrainingError, match=r"step 2: the loss is not finite"):
        train(config, progress=False)
    out = Path(config.output_dir)
    assert [p.name for p in list_checkpoints(out)] == ["step-0000001"]  # the good step only
    assert not (out / "final").exists()


def test_nan_before_any_checkpoint_leaves_no_output_folder(make_config, wan_precomputed, monkeypatch):
    config = make_config(**{"data.precomputed": str(wan_precomputed), "loop.max_steps": 2, "loop.save_every": 0})
    real = TrainingObjective.__call__

    def always_nan(self, model, batch, generator):
        terms = real(self, model, batch, generator)
        terms["loss"] = terms["loss"] * float("inf")
        return terms

    monkeypatch.setattr(TrainingObjective, "__call__", always_nan)
    with pytest.raises(TrainingError, match=r"step 1: the loss is not finite"):
        train(config, progress=False)
    assert not Path(config.output_dir).exists()


def test_finished_folder_needs_resume_or_overwrite(make_config, wan_precomputed):
    config = make_config(**{"data.precomputed": str(wan_precomputed), "loop.max_steps": 1, "loop.save_every": 0})
    train(config, progress=False)
    with pytest.raises(ConfigError, match=r"already holds a finished run: pass --resume .* --overwrite .*final"):
        train(config, progress=False)
    assert train(config, progress=False, overwrite=True).step == 1
    with pytest.raises(ConfigError, match="contradict"):
        train(config, resume=True, overwrite=True, progress=False)


def test_output_dir_that_is_a_file(make_config, wan_precomputed, tmp_path):
    (tmp_path / "file").write_text("x")
    config = make_config(output_dir=tmp_path / "file", **{"data.precomputed": str(wan_precomputed)})
    with pytest.raises(ConfigError, match=r"output_dir .*file is a file, expected a folder"):
        train(config, progress=False)
    assert (tmp_path / "file").read_text() == "x"


def test_resume_skips_a_damaged_checkpoint(make_config, wan_precomputed, capsys):
    config = make_config(**{"data.precomputed": str(wan_precomputed), "loop.max_steps": 2, "loop.save_every": 1,
                            "loop.keep_checkpoints": 2})
    train(config, progress=False)
    newest = list_checkpoints(config.output_dir)[-1]
    weights = next((newest / "controlnet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    config.loop.max_steps = 3
    result = train(config, resume=True, progress=False)
    assert result.step == 3
    err = capsys.readouterr().err
    assert "skipping checkpoint step-0000002" in err and "damaged" in err


def test_resume_with_every_checkpoint_damaged_names_the_file(make_config, wan_precomputed):
    config = make_config(**{"data.precomputed": str(wan_precomputed), "loop.max_steps": 1, "loop.save_every": 1})
    train(config, progress=False)
    only = list_checkpoints(config.output_dir)[-1]
    (only / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match=r"no intact checkpoint .*optimizer\.pt: damaged"):
        train(config, resume=True, progress=False)


def test_non_finite_weights_are_never_saved(make_config, wan_precomputed, monkeypatch):
    from magicmotion.training import trainer

    config = make_config(**{"data.precomputed": str(wan_precomputed), "loop.max_steps": 1, "loop.save_every": 0})
    real = trainer.save_final

    def poisoned(accelerator, module, *args, **kwargs):
        with torch.no_grad():
            next(module.parameters()).fill_(float("nan"))
        return real(accelerator, module, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_final", poisoned)
    with pytest.raises(TrainingError, match="is not finite; nothing saved"):
        train(config, progress=False)
    assert not (Path(config.output_dir) / "final").exists()
