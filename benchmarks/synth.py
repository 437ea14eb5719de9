"""Speed of the synthetic world: clips per second for generation alone (sample + render) and for
generation + writing a dataset (masks -> trajectory, H.264 video, annotation, index line, fsyncs).

    python benchmarks/synth.py [--clips 100] [--frames 17] [--size 64x64] [--all-cores]

Target: 100 clips of 17 frames at 64x64 in under 10 s on one core. By default the process is pinned
to one CPU core (Linux), so the figure does not depend on the machine's core count. Wall time also
counts waiting for the disk (the writer syncs each clip's files and index line); CPU time does not.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from magicmotion.data.cli import parse_size
from magicmotion.data.synthetic import SyntheticWorld, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=parse_size, default=(64, 64))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = parser.parse_args()

    cores = "all cores"
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        cores = "1 core"
    w, h = args.size
    print(f"synthetic world: {args.clips} clips x {args.frames} frames at {w}x{h}, {cores}, "
          f"{platform.processor() or platform.machine()}")

    world = SyntheticWorld(size=args.size, num_frames=args.frames)
    world.sample(np.random.default_rng([args.seed, 10**9]))  # warm up
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(args.clips):
        world.sample(np.random.default_rng([args.seed, k]))
    gen, gen_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"generation only:      {gen:6.2f} s  {args.clips / gen:8.1f} clips/s  (cpu {gen_cpu:.2f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        synthesize(os.path.join(tmp, "ds"), args.clips, frames=args.frames, size=args.size,
                   seed=args.seed, progress=False)
        full, full_cpu = time.perf_counter() - start, time.process_time() - cpu
    # wall time includes waiting for the disk (five fsyncs per clip); cpu time does not
    print(f"generation + writing: {full:6.2f} s  {args.clips / full:8.1f} clips/s  (cpu {full_cpu:.2f} s)")
    target = "met" if full < 10 * args.clips / 100 else "missed"
    print(f"target (100 clips in < 10 s): {target}")


if __name__ == "__main__":
    main()
