"""A job runs unchanged on a separately started cluster (`cluster.address`).

Real ``dask scheduler`` and ``dask worker`` processes are started on 127.0.0.1 at a free port; the
shipped segment config runs against them with only ``--set cluster.address=...`` added.
"""

from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import process_cluster, write_zarr
from daskgmm import GaussianMixture
from jobs_helpers import run_runner

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory):
    """A scheduler and one worker process; yields the scheduler's address, then stops both."""
    with process_cluster(tmp_path_factory.mktemp("cluster"), n_workers=1) as (client, _):
        yield client.scheduler.address


def transitions(address):
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def test_segment_job_runs_on_a_running_scheduler(tmp_path, scheduler_address):
    rng = np.random.default_rng(0)
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])
    regions = (np.arange(64)[:, None] // 22 + np.zeros(64, dtype=int))
    images = colours[regions][None] + rng.normal(scale=6, size=(2, 64, 64, 3))
    images = np.clip(images, 0, 255).astype(np.uint8)
    write_zarr(tmp_path / "images.zarr", images)
    done = run_runner(
        REPO / "configs" / "segment.yaml", "--set", f"cluster.address={scheduler_address}",
        "--set", f"input.path={tmp_path / 'images.zarr'}", "--set", "input.generate=null",
        "--set", "model.n_components=3", "--set", f"output.path={tmp_path / 'out'}")
    assert done.returncode == 0, done.stderr
    assert "dashboard: " in done.stdout and "iteration 1 lower bound" in done.stderr
    assert transitions(scheduler_address) > 0  # the work ran there
    labels = zarr.open_group(str(tmp_path / "out" / "result.zarr"), mode="r")["labels"][...]
    assert labels.shape == (2, 64, 64)
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    assert_array_equal(labels.reshape(-1), model.predict(images.reshape(-1, 3)))
    assert len(np.unique(labels)) == 3
