"""One rank of the context-parallel test (tests/pipelines/test_context_parallel.py), started twice by
`run_two_ranks` (gloo on CPU), so that the two processes start once for all of it:

1. `magicmotion generate ARGS...` (the CLI, in this process; ARGS hold --context-parallel);
2. the benchmark's smoke mode (benchmarks/context_parallel.py --smoke --json OUT/bench.json);
3. the tiny Wan pipeline split across the two processes in each case of `cp_cases.CASES`: rank R's
   frames of case C in OUT/C.rank{R}.npy (a case expecting an error: its message in OUT/C.rank{R}.txt).

    python tests/pipelines/cp_worker.py OUT generate ARGS...

Ring attention: diffusers' CPU attention ("native") returns no log-sum-exp, which ring attention
merges the parts with (its ring kernels are CUDA's: cuDNN, flash), so for the "ring" cases this
worker gives the native op the log-sum-exp of torch's own CPU flash-attention kernel
(`aten._scaled_dot_product_flash_attention_for_cpu`, which returns it). What is under test is our
split of the model and ControlNet, which is the same whichever kernel attends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cp_cases import CASES, load_case, run_case  # noqa: E402


def cpu_ring_attention() -> None:
    """The native attention op with the log-sum-exp ring attention asks for (CPU flash attention)."""
    from diffusers.models import attention_dispatch as ad

    native = ad._native_attention_forward_op

    def forward_op(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                   enable_gqa=False, return_lse=False, _save_ctx=True, _parallel_config=None):
        if not return_lse:
            return native(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, False,
                          _save_ctx, _parallel_config)
        q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))  # (B, L, H, D) -> (B, H, L, D)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal,
                                                                             scale=scale)[:2]
        return out.permute(0, 2, 1, 3), lse.permute(0, 2, 1)  # lse (B, H, L) -> (B, L, H), as the CUDA ops give

    ad._native_attention_forward_op = forward_op


def unsplit_residuals() -> None:
    """The wrong variant: the ControlNet left whole beside a split base, every process adding the first
    L/N tokens of each full-length residual, i.e. the residual not split with the sequence."""
    from magicmotion.models import transformer as joint

    def post_forward(self, module, output):
        if self.residual is not None:
            self.residual = self.residual[:, : output.shape[1]]
        return original(self, module, output)

    original = joint.ControlResidualHook.post_forward
    joint.ControlResidualHook.post_forward = post_forward


def main(out: Path, cli_args: list[str]) -> None:
    import importlib.util

    import torch.distributed as dist

    from magicmotion.cli import main as magicmotion
    from magicmotion.errors import ModelError
    from magicmotion.pipelines.batch import process_device
    from magicmotion.pipelines import parallel
    from magicmotion.pipelines.parallel import enable_context_parallel

    torch.set_num_threads(1)
    assert process_device() == "cpu"  # accelerate's gloo group, as `generate` sets it up
    rank = dist.get_rank()
    (out / f"cli.rank{rank}.txt").write_text(str(magicmotion(cli_args)))  # the exit code
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "context_parallel.py"
    spec = importlib.util.spec_from_file_location("context_parallel_benchmark", bench)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--smoke", "--json", str(out / "bench.json")])
    cpu_ring_attention()
    parallel.ring_attention_backend = lambda device, dtype=None: "native"  # with the op above
    for name, case in CASES.items():
        if name == "unsplit":  # before the pipeline loads: its hooks hold the method they were made with
            unsplit_residuals()
        pipe = load_case(case)
        if case.get("controlnet_whole"):  # only the base split, as a pipeline unaware of the ControlNet would
            with_base_only(pipe, case["mode"])
        else:
            enable_context_parallel(pipe, case["mode"])
        if case.get("expect_error"):
            try:
                run_case(pipe, case)
            except ModelError as e:
                (out / f"{name}.rank{rank}.txt").write_text(str(e))
            continue
        np.save(out / f"{name}.rank{rank}.npy", run_case(pipe, case))


def with_base_only(pipe, mode: str) -> None:
    """Context parallelism on the base transformer alone (the ControlNet runs on the whole sequence)."""
    import torch.distributed as dist

    from magicmotion.pipelines import parallel

    world = dist.get_world_size()
    mesh = torch.distributed.device_mesh.init_device_mesh(
        "cpu", (world, 1) if mode == "ring" else (1, world), mesh_dim_names=("ring", "ulysses"))
    with parallel._one_device_on_cpu():
        pipe.transformer.enable_parallelism(config=parallel.context_parallel_config(mode, world, mesh),
                                            cp_plan=parallel._plan(pipe.transformer, False))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
