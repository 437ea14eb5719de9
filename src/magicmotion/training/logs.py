"""What a run writes as it goes: log.csv (one row per logged step, resumable) and tensorboard."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch

from .checkpoints import TrainState
from .config import TrainConfig


LOG_FIELDS = ["step", "epoch", "loss", "diffusion", "segmentation", "lr", "grad_norm", "samples_per_s", "time_s"]


class CsvLog:
    """OUTPUT_DIR/log.csv, one row per logged step. On resume, rows after the resumed step (written
    after the last checkpoint by the interrupted run) are dropped first."""

    def __init__(self, path: Path, resume_step: int | None):
        from ..io import atomic_path

        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})


class LogWindow:
    """Loss terms, gradient norms and time since the last logged row."""

    NAMES = ("loss", "diffusion", "segmentation")

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.micro_steps = 0
        self.steps = 0
        self.grad_norms: list[float] = []
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.micro_steps += 1

    def step(self, grad_norm) -> None:
        self.steps += 1
        if grad_norm is not None:  # None under DeepSpeed, which clips inside its step
            self.grad_norms.append(float(grad_norm))

    def row(self, accelerator, state: TrainState, per_epoch: int, lr: float, loop) -> dict:
        """Mean terms over the window and over processes, lr, grad norm, throughput."""
        local = torch.tensor([self.sums.get(k, math.nan) / max(1, self.micro_steps) for k in self.NAMES],
                             device=accelerator.device)
        mean = accelerator.reduce(local, reduction="mean") if accelerator.num_processes > 1 else local
        elapsed = time.perf_counter() - self.start
        samples = self.steps * loop.batch_size * loop.grad_accum * accelerator.num_processes
        row = {"step": state.step, "epoch": state.samples // per_epoch, "lr": lr,
               "samples_per_s": round(samples / max(elapsed, 1e-9), 3), "time_s": round(elapsed, 3)}
        for k, v in zip(self.NAMES, mean.tolist()):
            row[k] = "" if math.isnan(v) else v
        if self.grad_norms:
            row["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        return row


def hparams(config: TrainConfig) -> dict:
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            key = prefix[:-1]
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", config.to_dict())
    return flat
