"""Speed of `magicmotion.trajectory.render`: 49 frames at 480x720, 5 moving objects, each kind.

    taskset -c 0 .venv/bin/python benchmarks/render.py [--repeat 5]

Prints the best and median seconds per kind (target: under 0.1 s per kind on one core). The
trajectory is 5 ellipses that move and change size; `mask` renders their masks on every frame, `box`
renders boxes derived from those masks (the dense case), `sparse_box` a sparsified copy (frame-0
mask plus 9 key boxes).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dense = moving_objects()
    cases = {"mask": dense, "box": dense, "sparse_box": sparsify(dense, num_keys=9)}
    print(f"render: {dense.num_frames} frames at {dense.height}x{dense.width}, "
          f"{len(dense.objects)} objects, best / median of {args.repeat}")
    for kind, traj in cases.items():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            maps = render(traj, kind)
            times.append(time.perf_counter() - start)
        assert maps.shape == (49, 480, 720, 3)
        print(f"{kind:>10}: {min(times):.3f} s / {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
