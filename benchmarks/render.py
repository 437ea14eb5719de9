"""Speed of `magicmotion.trajectory.render`: 49 frames at 480x720, 5 moving objects, each kind.

    taskset -c 0 .venv/bin/python benchmarks/render.py [--repeat 10]

Prints, per kind, the best and median wall-clock seconds and the best CPU seconds (process time:
what one core spends, without the time other programs hold that core). Target: under 0.1 s per
kind on one core. As a floor it also times allocating and filling an output array of that size
once (page faults included), which every kind has to pay.

The trajectory is 5 ellipses that move and grow: `mask` renders their masks on every frame, `box`
the boxes derived from those masks (the dense case, masks decoded to boxes), `sparse_box` a
sparsified copy (frame-0 mask plus 9 key boxes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from magicmotion.trajectory import ObjectTrack, Trajectory, masks_to_boxes, render, sparsify


def moving_objects(width: int = 720, height: int = 480, num_frames: int = 49,
                   num_objects: int = 5) -> Trajectory:
    """Ellipses moving across the frame and growing, a mask on every frame."""
    yy, xx = np.mgrid[:height, :width]
    traj = Trajectory(width=width, height=height, num_frames=num_frames, source="benchmark")
    for i in range(num_objects):
        obj = ObjectTrack(id=i + 1, label=f"object {i + 1}")
        for t in range(num_frames):
            cx = width * (0.15 + 0.15 * i) + 3 * t
            cy = height * (0.2 + 0.12 * i) + t
            rx, ry = 40 + 20 * i + t, 30 + 10 * i + t / 2
            obj.set_mask(t, ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1)
        traj.objects.append(obj)
    return masks_to_boxes(traj)


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) seconds of `repeat` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(wall), statistics.median(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    dense = moving_objects()
    shape = (dense.num_frames, dense.height, dense.width, 3)
    cases = {"mask": dense, "box": dense, "sparse_box": sparsify(dense, num_keys=9)}
    print(f"render: {dense.num_frames} frames at {dense.height}x{dense.width}, {len(dense.objects)} "
          f"objects; seconds over {args.repeat} runs: best wall / median wall / best CPU")
    best, median, cpu = timed(lambda: np.ones(shape, dtype=np.uint8), args.repeat)
    print(f"{'(floor)':>10}: {best:.3f} / {median:.3f} / {cpu:.3f}   allocate and fill the output once")
    for kind, traj in cases.items():
        maps = render(traj, kind)
        assert maps.shape == shape
        best, median, cpu = timed(lambda: render(traj, kind), args.repeat)
        print(f"{kind:>10}: {best:.3f} / {median:.3f} / {cpu:.3f}")


if __name__ == "__main__":
    main()
