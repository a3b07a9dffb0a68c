"""An online fit job SIGKILLed at random moments resumes to the uninterrupted job's bits.

Real ``python -m daskgmm.run`` processes of the shipped ``configs/fit.yaml`` with
``training.method: online`` on a Zarr table of 80 chunks (40 waves a pass, checkpointed after
every group of chained steps), killed at seeded random moments after their initialisation,
then resumed with ``--resume``: the model saved is the one of a run never killed, to the bit.
"""

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from conftest import kill_group, make_blobs, write_zarr
from daskgmm import GaussianMixture
from daskgmm.checkpoint import read_fit_state
from jobs_helpers import run_runner, start_runner

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fit.yaml"
KILLS = 3


def online_job(table, out):
    settings = {"input.path": table, "input.generate": "null", "output.path": out,
                "training.method": "online", "training.max_passes": 3, "model.tol": 0,
                "output.probabilities": "false"}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def killed(args, delay):
    """Start the job and SIGKILL it ``delay`` s after it logs its online initialisation;
    return its exit status."""
    process = start_runner(CONFIG, *args)
    for line in process.stderr:
        if "online initialization" in line:
            time.sleep(delay)
            break
    kill_group(process)
    process.stdout.close()
    process.stderr.close()
    return process.returncode


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import dask.array as da

    X = make_blobs(n_samples=160_000)
    return write_zarr(tmp_path_factory.mktemp("data") / "table.zarr",
                      da.from_array(X.astype(np.float32), chunks=2000))


def test_an_online_fit_killed_at_random_moments_resumes_to_the_same_bits(tmp_path, table):
    reference = tmp_path / "reference"
    done = run_runner(CONFIG, *online_job(table, reference))
    assert done.returncode == 0, done.stderr
    expected = GaussianMixture.load(reference / "model.zarr")
    assert expected.learning_method == "online" and expected.n_iter_ == 3

    rng = np.random.default_rng(20261204)
    out, resumed_mid_fit = tmp_path / "out", 0
    for _ in range(KILLS):
        status = killed(online_job(table, out), rng.uniform(0.05, 1.5))
        if status != -signal.SIGKILL:  # it finished first: nothing to resume
            continue
        checkpoint = tmp_path / "out.checkpoint"
        if checkpoint.exists():
            resumed_mid_fit += read_fit_state(checkpoint)[0].current is not None
        done = run_runner(CONFIG, *online_job(table, out), "--resume")
        assert done.returncode == 0, done.stderr
        model = GaussianMixture.load(out / "model.zarr")
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            assert_array_equal(getattr(model, name), getattr(expected, name), err_msg=name)
        assert model.lower_bounds_ == expected.lower_bounds_
        assert model.online_steps_ == expected.online_steps_
    assert resumed_mid_fit >= 1  # at least one kill fell between two checkpoints of the fit
