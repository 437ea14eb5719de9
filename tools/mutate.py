"""`make mutate MODULE=trajectory/render`: mutmut over one core module against the tests that exercise it.

Each module runs in its own scratch folder, `.mutate/<module>/` (git-ignored), holding a generated
pyproject.toml (the project's, plus a [tool.mutmut] section naming the module and its tests) and
links to src/, tests/, what tests read beside them and ../shared (the real samples the tests read), so runs of different modules
neither share mutmut's state nor touch the worktree. mutmut runs with `process_isolation =
"forkserver"`: its default fork mode reported torch's segfaults in forked children as survivors.

    python tools/mutate.py trajectory/render            # run (resumes where it stopped)
    python tools/mutate.py trajectory/render --results  # mutmut's per-mutant results
    python tools/mutate.py trajectory/render --retest   # after adding tests: the survivors again
    python tools/mutate.py --list                       # the modules and their tests
Too slow for CI (minutes to hours per module on 2 cores); docs/testing.md has the measured kill rates.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# module (under src/magicmotion, no .py) -> the test files that exercise it
MODULES = {
    "trajectory/render": ["tests/trajectory/test_trajectory_render.py", "tests/trajectory/test_trajectory_palette_release.py"],
    # decode: without the 49-frame 720x480 H.264 reads (~15 s each; test_h264_small and the envelope tests
    # reach the same code) and the controlnet-palette test (a model load; no map decoding): they stay in
    # the suite, but a surviving mutant ran every covering test, ~55 s each with them
    "trajectory/decode": ["tests/trajectory/test_trajectory_decode.py", "tests/trajectory/test_trajectory_envelope.py",
                          "tests/trajectory/test_trajectory_maps_input.py",
                          "--deselect=tests/trajectory/test_trajectory_decode.py::test_h264_720x480_49_frames",
                          "--deselect=tests/trajectory/test_trajectory_maps_input.py::test_palette_comes_from_the_controlnet"],
    "trajectory/outlines": ["tests/trajectory/test_outlines.py", "tests/trajectory/test_trajectory_decode.py",
                            "tests/trajectory/test_trajectory_envelope.py"],
    "trajectory/spec": ["tests/trajectory/test_trajectory_spec.py", "tests/trajectory/test_trajectory_spec_rle.py",
                        "tests/trajectory/test_trajectory_bad_input.py"],
    "trajectory/label_masks": ["tests/trajectory/test_label_masks.py", "tests/trajectory/test_trajectory_spec.py",
                               "tests/trajectory/test_trajectory_bad_input.py", "tests/trajectory/test_trajectory_real_data.py",
                               "tests/trajectory/test_sparse.py"],
    "trajectory/ops": ["tests/trajectory/test_trajectory_ops.py", "tests/trajectory/test_sparse.py"],
    "bench/metrics": ["tests/bench/test_bench_metrics.py"],
    "training/losses": ["tests/training/test_losses.py"],
    # the stage logic: each stage's conditions (data) and its loss (objective); the DDP test runs in
    # subprocesses, which mutmut does not trace, and reaches nothing the one-process tests do not
    "training/data": ["tests/training/test_data.py", "tests/training/test_precompute.py",
                      "tests/training/test_trainer.py",
                      "--deselect=tests/training/test_trainer.py::test_two_process_ddp_on_cpu"],
    "training/objective": ["tests/training/test_trainer.py", "tests/training/test_trainer_guards.py",
                           "tests/training/test_wan22_training.py", "tests/training/test_conditioning.py",
                           "--deselect=tests/training/test_trainer.py::test_two_process_ddp_on_cpu"],
    "training/trainer": ["tests/training/test_trainer.py", "tests/training/test_trainer_guards.py"],
    "models/controlnet_wan": ["tests/models/test_controlnet_build.py", "tests/models/test_control_residuals.py",
                              "tests/models/test_controlnet_wan22.py"],
    "models/controlnet_cogvideox": ["tests/models/test_controlnet_build.py", "tests/models/test_control_residuals.py",
                                    "tests/models/test_joint_transformer.py"],
    "models/segment_head": ["tests/models/test_segment_head.py"],
    "models/transformer": ["tests/models/test_joint_transformer.py", "tests/models/test_control_residuals.py",
                           "tests/pipelines/test_pipeline_hooks.py"],
    "pipelines/loading": ["tests/pipelines/test_pipeline_loading.py", "tests/pipelines/test_pipeline_settings.py",
                          "tests/test_hub.py", "tests/pipelines/test_pipeline_hooks.py",
                          "tests/pipelines/test_pipeline_offload.py", "tests/pipelines/test_pipeline_wan22.py"],
    "pipelines/memory": ["tests/pipelines/test_pipeline_hooks.py", "tests/pipelines/test_pipeline_offload.py",
                         "tests/pipelines/test_pipeline_lora.py"],
    "pipelines/guidance": ["tests/pipelines/test_guidance.py", "tests/pipelines/test_pipeline_speed.py",
                           "tests/pipelines/test_pipeline_conditions.py"],
}
# what tests read beside tests/: the README's example spec and first frame, the shipped training
# configs, the docs whose commands and figures tests check, the README
BESIDE_TESTS = ("examples", "configs", "docs", "README.md")


def workdir(module: str) -> Path:
    return ROOT / ".mutate" / module.replace("/", "-")


def prepare(module: str, debug: bool = False) -> Path:
    """The scratch folder for `module`, its pyproject.toml written for this module's run."""
    work = workdir(module)
    work.mkdir(parents=True, exist_ok=True)
    for name, target in [(name, ROOT / name) for name in ("src", "tests", *BESIDE_TESTS)] + [
            ("shared", ROOT.parent / "shared")]:
        link = work / name
        if not link.is_symlink():
            link.symlink_to(target)
    tests = MODULES[module]
    project = (ROOT / "pyproject.toml").read_text()
    project = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", project)
    quoted = ", ".join(f'"{t}"' for t in tests)
    project += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"also_copy = [{', '.join(repr(n).replace(chr(39), chr(34)) for n in BESIDE_TESTS)}]\n"
        f'only_mutate = ["src/magicmotion/{module}.py"]\n'
        f"pytest_add_cli_args_test_selection = [{quoted}]\n"
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
        'process_isolation = "forkserver"\n'
        # mutants reached only through a thread or a subprocess are not traced: run every mutant
        "mutate_only_covered_lines = false\n"
        # mutmut's "failed to collect stats" hides pytest's output; debug shows it
        + ("debug = true\n" if debug else "")
    )
    (work / "pyproject.toml").write_text(project)
    return work


def retest(work: Path, module: str) -> None:
    """Forget mutmut's results for the mutants not killed (exit code 0: survived; 33: no tests; -24:
    out of CPU time, which a busy machine also causes) and its
    record of which tests reach which function, so that `mutmut run` checks them with the tests as
    they are now."""
    import json

    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    meta = work / "mutants" / "src" / "magicmotion" / f"{module}.py.meta"
    if meta.is_file():
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        for key, code in codes.items():
            if code in (0, 33, -24):
                codes[key] = None
        meta.write_text(json.dumps(data))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="?", help="e.g. trajectory/render (one of --list)")
    parser.add_argument("--list", action="store_true", help="the modules and their tests")
    parser.add_argument("--results", action="store_true", help="print mutmut's results instead of running")
    parser.add_argument("--retest", action="store_true",
                        help="run the survivors (and mutants without tests) again, with the tests' coverage "
                             "collected afresh (mutmut keeps its results; new tests are not seen otherwise)")
    parser.add_argument("--debug", action="store_true", help="show pytest's output (why a stats run failed)")
    parser.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1)")
    args = parser.parse_args(argv)
    if args.list or not args.module:
        for module, tests in MODULES.items():
            print(f"{module:<32} {' '.join(tests)}")
        return 0
    module = args.module.removesuffix(".py").removeprefix("src/magicmotion/")
    if module not in MODULES:
        print(f"mutate: unknown module {args.module!r}; one of: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    work = prepare(module, args.debug)
    if args.retest:
        retest(work, module)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": ""}
    command = ["results", "--all", "true"] if args.results else ["run", "--max-children", str(args.max_children)]
    return subprocess.call([sys.executable, "-m", "mutmut", *command], cwd=work, env=env)


if __name__ == "__main__":
    sys.exit(main())
