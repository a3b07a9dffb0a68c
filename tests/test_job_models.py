"""A job's model is the estimator's, to the bit: fit, segment and select, float32 and float64,
run straight through or killed mid-fit and resumed."""

import dask.array as da
import numpy as np
import pytest

from conftest import assert_same_model, make_blobs, write_zarr
from daskgmm import GaussianMixture, select_model
from jobs_helpers import run_pipeline
from daskgmm.pipelines import job_model, pixels

MODEL = {"n_components": 3, "covariance_type": "full", "tol": 1e-6, "max_iter": 12, "n_init": 2,
         "random_state": 0, "split_every": 2}


def fitted_by_job(job, crash_after=None):
    """Run a job in-process (crashed mid-fit first and resumed, with ``crash_after``); return
    it prepared and the model it saved."""
    prepared = run_pipeline(job, crash_after=crash_after)
    assert (prepared.resumed is not None) == (crash_after is not None)
    return prepared, GaussianMixture.load(prepared.config.output.path + "/model.zarr")


def table(tmp_path, dtype):
    write_zarr(tmp_path / "rows.zarr", da.from_array(make_blobs(n_samples=1800).astype(dtype),
                                                     chunks=200))
    return str(tmp_path / "rows.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("crash_after", [None, 3, 15], ids=["straight", "resumed", "2nd-init"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fit_job_gives_the_estimators_model(client, tmp_path, dtype, crash_after):
    path = table(tmp_path, dtype)
    job = {"pipeline": "fit", "input": {"path": path}, "model": MODEL,
           "output": {"path": str(tmp_path / "out")}}
    _, model = fitted_by_job(job, crash_after)
    expected = GaussianMixture(**MODEL).fit(da.from_zarr(path))
    assert_same_model(model, expected)


@pytest.mark.parametrize("crash_after", [None, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_segment_job_gives_the_estimators_model(client, tmp_path, dtype, crash_after):
    rng = np.random.default_rng(0)
    colours = rng.integers(20, 230, size=(3, 3))
    images = colours[rng.integers(0, 3, size=(2, 48, 48))] + rng.normal(0, 4, size=(2, 48, 48, 3))
    write_zarr(tmp_path / "images.zarr", np.clip(images, 0, 255).astype(dtype))
    job = {"pipeline": "segment", "input": {"path": str(tmp_path / "images.zarr")},
           "model": MODEL, "training": {"sample": 3000},
           "output": {"path": str(tmp_path / "out"), "preview": False}}
    prepared, model = fitted_by_job(job, crash_after)
    stack = pixels.image_stack(da.from_zarr(str(tmp_path / "images.zarr")), -1)
    sample = pixels.training_pixels(prepared.config, [stack], pixels.pixel_chunks(stack))
    assert sample.shape == (3000, 3) and sample.dtype == dtype
    _, X = job_model.scaled_features(prepared.config, sample)
    assert_same_model(model, GaussianMixture(**MODEL).fit(X))


@pytest.mark.slow
@pytest.mark.parametrize("crash_after", [None, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_select_job_gives_the_estimators_best_model(client, tmp_path, dtype, crash_after):
    path = table(tmp_path, dtype)
    grid = {"n_components": [2, 3], "covariance_types": ["full", "diag"]}
    job = {"pipeline": "select", "input": {"path": path}, "select": grid,
           "model": {"tol": 1e-6, "max_iter": 12, "random_state": 0, "split_every": 2},
           "output": {"path": str(tmp_path / "out")}}
    _, model = fitted_by_job(job, crash_after)
    expected = select_model(da.from_zarr(path), n_components=[2, 3],
                            covariance_types=["full", "diag"], tol=1e-6, max_iter=12,
                            random_state=0, split_every=2).best_model
    assert_same_model(model, expected)
