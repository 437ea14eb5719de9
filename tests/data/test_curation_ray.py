"""The Ray runner gives the same dataset as the local runner (a local Ray with two CPUs)."""

from __future__ import annotations

import json
import sys

import pytest

ray = pytest.importorskip("ray", reason="ray[data] is not installed: pip install 'ray[data]'")
pytest.importorskip("ray.data", reason="ray[data] is not installed: pip install 'ray[data]'")

from magicmotion.data.curation import MANIFEST, Manifest, curate  # noqa: E402
from magicmotion.data.dataset import read_index  # noqa: E402

from test_curation import _config, oracle_models, raw  # noqa: E402,F401  (raw is a fixture)


@pytest.fixture(scope="module")
def local_ray():
    import ray.cloudpickle

    # the oracle models live in a test module the Ray workers cannot import: ship them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules["test_curation"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _content(root):
    records = read_index(root)
    return [(r, json.loads((root / r["annotation"]).read_text())) for r in records]


@pytest.mark.slow
def test_ray_runner_matches_local_runner(raw, tmp_path, local_ray):  # noqa: F811
    csv_path, _ = raw
    local = curate(csv_path, tmp_path / "local", _config(), models=oracle_models(), progress=False)
    on_ray = curate(csv_path, tmp_path / "ray", _config(engine="ray"), models=oracle_models(),
                    progress=False)
    assert (on_ray.done, on_ray.failed, on_ray.sources_failed) == (local.done, local.failed, 1) == (3, 0, 1)
    a, b = _content(tmp_path / "local"), _content(tmp_path / "ray")
    assert [r["id"] for r, _ in b] == ["two-f000000", "two-f000020", "one-f000000"]
    for (ra, aa), (rb, ab) in zip(a, b):
        assert ra == rb and aa == ab
    with Manifest(tmp_path / "ray" / MANIFEST) as m:
        assert m.counts()["clips"]["done"] == 3
        assert [f[:2] for f in m.failures()] == [("bad", "ingest")]
    # a re-run on Ray has nothing left to do
    again = curate(csv_path, tmp_path / "ray", _config(engine="ray"), models=oracle_models(),
                   progress=False)
    assert (again.done, again.skipped) == (0, 3)
