"""Distributed training on CPU: DDP, FSDP (FULL_SHARD) and DeepSpeed ZeRO-3/2 end with the weights of one process.

Two processes (gloo) run the trainer under torch.distributed.run with the environment `accelerate
launch --config_file configs/accelerate/X.yaml --num_processes 2` derives from the shipped configs.
Each run of batch 1 per process must end with the ControlNet and segment head weights of one
process of batch 2 (the same global batch: the same samples, each noised by its own seed), within
float tolerance; so must one process of batch 1 with 2 accumulation steps, and FSDP and ZeRO-3
runs resumed from their step-1 checkpoints. AdamW's first steps are close to -lr x the gradient's
sign, blind to a gradient of the wrong scale: plain-SGD runs of DDP, FSDP and ZeRO-2 are compared with
one process as well, and a loss doubled on one rank must fail that comparison. The DeepSpeed tests
run where deepspeed is installed (`pip install "magicmotion[deepspeed]"`; CI's .ci/run installs it)
and are skipped, saying so, elsewhere.

accelerate turns FSDP and DeepSpeed on for accelerators only; on CPU the worker below sets the
distributed type as accelerate would on GPUs, and skips building DeepSpeed's shared-memory
all-reduce kernel (a minutes-long compile; gloo reduces instead). Everything under test — wrapping
per block, sharding, gradient reduction, sharded checkpoints, gathering final/ — runs accelerate's,
torch's and DeepSpeed's own code.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import config_dict

from magicmotion.training.config import check_config, from_dict
from magicmotion.training.setup import build_models
from magicmotion.training.trainer import train

ACCELERATE = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
TOL = 1e-5  # max |difference| of any weight: 1.1e-6 measured; noise drawn per process instead of per sample: 4e-3
SETTINGS = {"stage": 2, "condition": "box", "segment_head": True, "lambda_seg": 0.5, "loop.max_steps": 2,
            "loop.save_every": 1}

WORKER = r'''
"""Runs the jobs of argv[1] (JSON: [{env, config, resume}]) one after another on this rank."""
import json, os, sys
import torch
torch.set_num_threads(1)
import accelerate
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

# gloo on CPU without --cpu, so accelerate's DeepSpeed branch (skipped under --cpu) is taken
PartialState._prepare_backend = lambda self, *a, **k: ("gloo", DistributedType.MULTI_CPU)
JOBS = json.loads(open(sys.argv[1]).read())
if any(job["env"].get("ACCELERATE_USE_DEEPSPEED") == "true" for job in JOBS):
    import deepspeed
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class CpuAccelerator(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if os.environ.get("ACCELERATE_USE_FSDP") == "true":  # what accelerate does on GPUs
            self.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        if self.state.deepspeed_plugin is not None:  # partition every tensor of the tiny model
            self.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
            if os.environ.get("MM_TEST_OPTIMIZER") == "sgd":  # ZeRO takes other optimizers when told so
                self.state.deepspeed_plugin.deepspeed_config["zero_allow_untested_optimizer"] = True


accelerate.Accelerator = CpuAccelerator
AcceleratorState.destroy_process_group = lambda self, group=None: None  # one process group for all jobs


class PlainSGD(torch.optim.SGD):
    """SGD without momentum in AdamW's place (MM_TEST_OPTIMIZER=sgd): a step is -lr x the gradient,
    so a gradient of the wrong scale shows (AdamW's first steps are close to -lr x its sign)."""

    def __init__(self, params, lr, **_):
        super().__init__(params, lr=lr, momentum=0.0)


if os.environ.get("MM_TEST_OPTIMIZER") == "sgd":
    torch.optim.AdamW = PlainSGD
from magicmotion.training.config import from_dict
import magicmotion.training.objective as objective_module
from magicmotion.training.trainer import train

_total_loss = objective_module.total_loss


def total_loss(*args, **kwargs):
    """The wrong variant the gradient comparisons must catch: the loss doubled on one rank."""
    terms = _total_loss(*args, **kwargs)
    if os.environ.get("MM_WRONG_DOUBLE_LOSS_ON_RANK") == os.environ["RANK"]:
        terms["loss"] = terms["loss"] * 2
    return terms


objective_module.total_loss = total_loss  # where the step's loss is summed

for job in JOBS:
    for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_", "MM_WRONG_"))]:
        del os.environ[key]
    os.environ.update(job["env"])
    AcceleratorState._reset_state()  # a fresh Accelerator per job, on the same process group
    GradientState._reset_state()
    if PartialState._shared_state:  # undo the last job's FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.MULTI_CPU
    result = train(from_dict(job["config"]), resume=job["resume"], progress=False)
    print("DONE", os.environ["RANK"], job["config"]["output_dir"], result.step, flush=True)
'''


def launch_env(config_file: Path) -> dict[str, str]:
    """The ACCELERATE_* / FSDP_* variables `accelerate launch --config_file FILE --num_processes 2`
    gives its processes (mixed precision off: CPU)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "--num_processes", "2",
                                               "--mixed_precision", "no", "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE_", "FSDP_"))}


def launch(tmp_path: Path, jobs: list[dict], extra_env: dict | None = None) -> str:
    """Run the jobs on 2 processes (torch.distributed.run); their stdout."""
    script, spec = tmp_path / "worker.py", tmp_path / "jobs.json"
    script.write_text(WORKER)
    spec.write_text(json.dumps(jobs))
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(OMP_NUM_THREADS="1", **(extra_env or {}))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(script), str(spec)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    return done.stdout


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(str(run / "final" / name / "diffusion_pytorch_model.safetensors"))
            for name in ("controlnet", "segment_head")}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def assert_same_weights(run: Path, reference: dict, what: str) -> None:
    got = final_weights(run)
    for name in reference:
        assert max_difference(got[name], reference[name]) < TOL, (what, name, max_difference(got[name], reference[name]))


@pytest.fixture(scope="module")
def even_precomputed(wan_precomputed, tmp_path_factory) -> Path:
    """The 3 precomputed clips and the first again: 2 processes then see every sample of an epoch
    (the sampler cuts an epoch to a multiple of the world size), as one process does."""
    folder = tmp_path_factory.mktemp("even") / "precomputed"
    shutil.copytree(wan_precomputed, folder)
    index = json.loads((folder / "index.json").read_text())
    index["clips"].append(dict(index["clips"][0], id=index["clips"][0]["id"] + "-again"))
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.fixture(scope="module")
def reference(wan_base, dataset, even_precomputed, tmp_path_factory) -> dict:
    """One process, batch 2: the weights every distributed run must end with (and how far they moved)."""
    out = tmp_path_factory.mktemp("one-process")

    def config(name, **overrides):
        c = from_dict(config_dict(wan_base, dataset, out / name, **{"data.precomputed": str(even_precomputed),
                                                                   **SETTINGS, **overrides}))
        check_config(c)
        return c

    batch2 = config("batch2", **{"loop.batch_size": 2})
    train(batch2, progress=False)
    weights = final_weights(out / "batch2")
    initial, _ = build_models(batch2)
    moved = {"controlnet": max_difference(weights["controlnet"], initial.controlnet.state_dict()),
             "segment_head": max_difference(weights["segment_head"], initial.segment_head.state_dict())}
    return {"weights": weights, "moved": moved, "config": config, "out": out}


def job(config_file: str, wan_base, dataset, precomputed, out: Path, resume: bool = False, env=None,
        **overrides) -> dict:
    config = config_dict(wan_base, dataset, out, **{"data.precomputed": str(precomputed), **SETTINGS, **overrides})
    return {"env": {**launch_env(ACCELERATE / config_file), **(env or {})}, "config": config, "resume": resume}


# Plain SGD steps (no momentum, no weight decay, no clipping, no warm-up): the weights' change is -lr x
# the sum of the steps' gradients, so the runs compare gradients, scale included.
SGD = {"optim.lr": 1.0, "optim.weight_decay": 0.0, "optim.max_grad_norm": 0.0, "optim.warmup_steps": 0}
# relative L2 of the weights' change against one process's: measured 3.2e-7 for DDP and for FSDP (float
# reduction order); the loss doubled on one rank gives 1.7 (the wrong variant below, which must fail it)
SGD_BOUND = 1e-4


def sgd_change(run: Path, initial: dict) -> torch.Tensor:
    weights = final_weights(run)
    return torch.cat([(weights[n][k].float() - initial[n][k].float()).flatten() for n in sorted(weights)
                      for k in sorted(weights[n])])


def relative_change_error(run: Path, reference_run: Path, initial: dict) -> float:
    got, ref = sgd_change(run, initial), sgd_change(reference_run, initial)
    return float((got - ref).norm() / ref.norm())


def sgd_reference(wan_base, dataset, even_precomputed, tmp_path) -> dict:
    """One process, batch 2, plain SGD: the initial trained weights (its run is tmp_path/one)."""
    one = from_dict(config_dict(wan_base, dataset, tmp_path / "one", **{
        "data.precomputed": str(even_precomputed), **SETTINGS, **SGD, "loop.batch_size": 2}))
    initial_models, _ = build_models(one)
    initial = {"controlnet": initial_models.controlnet.state_dict(),
               "segment_head": initial_models.segment_head.state_dict()}
    with pytest.MonkeyPatch.context() as mp:
        class PlainSGD(torch.optim.SGD):
            def __init__(self, params, lr, **_):
                super().__init__(params, lr=lr, momentum=0.0)

        mp.setattr(torch.optim, "AdamW", PlainSGD)
        train(one, progress=False)
    assert sgd_change(tmp_path / "one", initial).abs().max() > 1e-3  # the weights moved
    return initial


@pytest.mark.slow
def test_ddp_and_fsdp_gradients_equal_one_process_on_the_same_global_batch(wan_base, dataset, even_precomputed,
                                                                           tmp_path):
    """DDP and FSDP take the mean of the ranks' gradients: with plain SGD their weights change as one
    process's on the same global batch (batch 2), scale included; a loss doubled on one rank does not."""
    initial = sgd_reference(wan_base, dataset, even_precomputed, tmp_path)
    common = (wan_base, dataset, even_precomputed)
    runs = {name: tmp_path / name for name in ("ddp", "fsdp", "ddp-doubled")}
    out = launch(tmp_path, [job("ddp.yaml", *common, runs["ddp"], **SGD),
                            job("fsdp.yaml", *common, runs["fsdp"], **SGD),
                            job("ddp.yaml", *common, runs["ddp-doubled"], env={"MM_WRONG_DOUBLE_LOSS_ON_RANK": "1"},
                                **SGD)],
                 extra_env={"MM_TEST_OPTIMIZER": "sgd"})
    assert out.count("DONE") == 6, out
    errors = {name: relative_change_error(run, tmp_path / "one", initial) for name, run in runs.items()}
    assert errors["ddp"] < SGD_BOUND and errors["fsdp"] < SGD_BOUND, errors
    assert errors["ddp-doubled"] > 100 * SGD_BOUND, errors  # the wrong variant fails the bound by far


def test_gradient_accumulation_equals_the_batch(reference):
    assert min(reference["moved"].values()) > 100 * TOL  # the weights did move: the comparisons below mean something
    config = reference["config"]("accumulated", **{"loop.batch_size": 1, "loop.grad_accum": 2})
    train(config, progress=False)
    assert_same_weights(Path(config.output_dir), reference["weights"], "batch 1 x 2 accumulation steps")


@pytest.mark.slow
def test_ddp_and_fsdp_on_two_processes_equal_one_process(reference, wan_base, dataset, even_precomputed, tmp_path):
    runs = {name: tmp_path / name for name in ("ddp", "fsdp", "fsdp-resumed")}
    common = (wan_base, dataset, even_precomputed)
    jobs = [job("ddp.yaml", *common, runs["ddp"]),
            job("fsdp.yaml", *common, runs["fsdp"], **{"loop.gradient_checkpointing": True}),  # as the 14B configs
            job("fsdp.yaml", *common, runs["fsdp-resumed"], **{"loop.max_steps": 1}),  # stopped after step 1 ...
            job("fsdp.yaml", *common, runs["fsdp-resumed"], resume=True)]  # ... and resumed to step 2
    assert jobs[1]["env"]["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    out = launch(tmp_path, jobs)
    assert out.count("DONE") == 8, out
    for name, run in runs.items():
        assert_same_weights(run, reference["weights"], name)
    # FSDP really sharded: each process wrote its own shard of the weights and of the AdamW states
    state = runs["fsdp"] / "checkpoints" / "step-0000002" / "accelerate"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert sorted(p.name for p in (state / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert json.loads((runs["fsdp-resumed"] / "final" / "training.json").read_text())["steps"] == 2


def _deepspeed_installed() -> bool:
    """Found without importing it here (the worker processes import it)."""
    from importlib.util import find_spec

    return find_spec("deepspeed") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _deepspeed_installed(),
                    reason="deepspeed is not installed (pip install 'magicmotion[deepspeed]'): ZeRO-3 not run")
def test_deepspeed_zero3_and_zero2_on_two_processes_equal_one_process(reference, wan_base, dataset, even_precomputed, tmp_path):
    run, resumed, zero2 = tmp_path / "zero3", tmp_path / "zero3-resumed", tmp_path / "zero2"
    common = (wan_base, dataset, even_precomputed)
    out = launch(tmp_path, [job("deepspeed-zero3.yaml", *common, run, **{"loop.validate_every": 1}),
                            job("deepspeed-zero3.yaml", *common, resumed, **{"loop.max_steps": 1}),
                            job("deepspeed-zero3.yaml", *common, resumed, resume=True),
                            job("deepspeed-zero2.yaml", *common, zero2)])
    assert out.count("DONE") == 8, out
    assert "no validation videos under FSDP or ZeRO-3" in out  # the main process alone would wait forever
    assert_same_weights(run, reference["weights"], "deepspeed zero3")
    assert_same_weights(resumed, reference["weights"], "deepspeed zero3, resumed")
    assert_same_weights(zero2, reference["weights"], "deepspeed zero2")
    # ZeRO-3 partitioned the weights: each process holds its own partition of the fp32 weights and AdamW states
    shards = sorted(p.name for p in (run / "checkpoints" / "step-0000002" / "accelerate" / "pytorch_model").rglob("*optim_states.pt"))
    assert len(shards) == 2, shards


@pytest.mark.parametrize("path", sorted(ACCELERATE.glob("*.yaml")), ids=lambda p: p.name)
def test_every_accelerate_config_loads(path):
    """accelerate's own loader and launcher read every shipped config; the training configs its
    comments name exist."""
    import re

    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes > 1 and config.mixed_precision == "bf16" and not config.use_cpu
    env = launch_env(path)  # as `accelerate launch --config_file` derives its processes' environment
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"
    if config.distributed_type == "FSDP":
        assert env["FSDP_VERSION"] == "2" and env["FSDP_RESHARD_AFTER_FORWARD"] == "true"  # FULL_SHARD
        assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP" and "FSDP_TRANSFORMER_CLS_TO_WRAP" not in env
    elif config.distributed_type == "DEEPSPEED":
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        if env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3":
            assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"  # final/ is gathered
    named = set(re.findall(r"configs/[\w.-]+/(?:stage\w*\.yaml)?", path.read_text()))
    assert named, f"{path.name} says which training configs it is for"
    root = ACCELERATE.parents[1]
    assert all((root / n).exists() for n in named), [n for n in named if not (root / n).exists()]


@pytest.mark.parametrize("model", ["wan", "cogvideox"])
def test_fsdp_wraps_each_control_block(model, make_config, cogvideox_base):
    """fsdp.yaml names no class: accelerate wraps the ControlNet's own blocks (TrainableModules'
    _no_split_modules), the same file for every base."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    from magicmotion.training.setup import TrainableModules

    config = make_config(model=model, base=cogvideox_base if model == "cogvideox" else None,
                         stage=2, condition="box", segment_head=True, lambda_seg=0.5)
    modules = TrainableModules(build_models(config)[0])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in launch_env(ACCELERATE / "fsdp.yaml").items():
            mp.setenv(key, value)
        policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), modules)
    blocks = modules.controlnet.blocks if model == "wan" else modules.controlnet.transformer_blocks
    wrapped = [m for m in modules.modules() if policy(m)]
    assert all(any(b is m for m in wrapped) for b in blocks)
    assert {type(m).__name__ for m in wrapped} <= {"WanTransformerBlock", "CogVideoXBlock", "CogVideoXPatchEmbed"}
    assert not any(m is modules.segment_head for m in wrapped)


@pytest.mark.slow
@pytest.mark.skipif(not _deepspeed_installed(),
                    reason="deepspeed is not installed (pip install 'magicmotion[deepspeed]'): ZeRO-2 not run")
def test_deepspeed_zero2_gradients_equal_one_process_on_the_same_global_batch(wan_base, dataset, even_precomputed,
                                                                              tmp_path):
    """ZeRO-2 (gradients reduced and sharded by DeepSpeed, gloo on CPU): plain SGD steps change the
    weights as one process's on the same global batch; a loss doubled on one rank does not."""
    initial = sgd_reference(wan_base, dataset, even_precomputed, tmp_path)
    common = (wan_base, dataset, even_precomputed)
    runs = {name: tmp_path / name for name in ("zero2", "zero2-doubled")}
    out = launch(tmp_path, [job("deepspeed-zero2.yaml", *common, runs["zero2"], **SGD),
                            job("deepspeed-zero2.yaml", *common, runs["zero2-doubled"],
                                env={"MM_WRONG_DOUBLE_LOSS_ON_RANK": "1"}, **SGD)],
                 extra_env={"MM_TEST_OPTIMIZER": "sgd"})
    assert out.count("DONE") == 4, out
    errors = {name: relative_change_error(run, tmp_path / "one", initial) for name, run in runs.items()}
    assert errors["zero2"] < SGD_BOUND and errors["zero2-doubled"] > 100 * SGD_BOUND, errors
