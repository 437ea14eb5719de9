"""Casting a freshly built model to its base's dtype, keeping diffusers' fp32 modules in fp32."""

from __future__ import annotations

import torch
from torch import nn


def cast_like(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Move `model` to `device` and cast its floating parameters to `dtype`, except those under the
    modules named in its `_keep_in_fp32_modules` (as diffusers' `from_pretrained(torch_dtype=...)` does).
    Buffers keep their dtype (diffusers keeps rotary tables and CogVideoX position tables in float64).
    """
    nn.Module.to(model, device=device)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, tensor in model.named_parameters():
        if not tensor.is_floating_point() or tensor.dtype == dtype:
            continue
        if any(k in name.split(".") for k in keep):
            continue
        tensor.data = tensor.data.to(dtype)
    return model
