"""Images of few possible colours are labelled through a table of every colour's outputs, and
get exactly what the per-pixel evaluation gives."""

import numpy as np
import pytest
import zarr
from distributed import get_task_stream
from numpy.testing import assert_allclose, assert_array_equal

from conftest import write_zarr
from daskgmm import GaussianMixture
from daskgmm.pipelines import colour_table
from jobs_helpers import run_pipeline

import dask.array as da

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("dtype, n_channels", [(np.uint8, 1), (np.uint8, 2), (np.uint8, 3),
                                               (np.int8, 2), (np.uint16, 1)])
def test_every_colour_has_its_own_code(dtype, n_channels):
    n = colour_table.n_colours(dtype, n_channels)
    rows = colour_table.colour_rows(0, n, dtype, n_channels)
    assert rows.dtype == dtype and rows.shape == (n, n_channels)
    assert_array_equal(colour_table.pixel_codes(rows), np.arange(n))  # so the rows differ
    assert rows.min() == np.iinfo(dtype).min and rows.max() == np.iinfo(dtype).max
    assert_array_equal(colour_table.colour_rows(5, 9, dtype, n_channels), rows[5:9])


@pytest.mark.parametrize("dtype, n_channels, expected", [
    (np.uint8, 3, 2**24), (np.uint8, 1, 256), (np.uint16, 1, 2**16),
    (np.uint8, 4, None), (np.uint16, 2, None), (np.float32, 1, None)])
def test_tables_only_for_narrow_integer_pixels(dtype, n_channels, expected):
    assert colour_table.n_colours(dtype, n_channels) == expected


def test_a_table_only_pays_for_many_pixels_per_colour():
    labels = zarr.zeros((1, 4, 4), dtype=np.uint8)
    assert colour_table.worth_a_table(np.uint8, 1, 512, {"labels": labels})
    assert not colour_table.worth_a_table(np.uint8, 1, 511, {"labels": labels})
    assert not colour_table.worth_a_table(np.float32, 1, 10**9, {"labels": labels})
    # 2**24 colours with 40 probabilities each would make a 2.7 GB table.
    probabilities = zarr.zeros((1, 4, 4, 40), dtype=np.float32)
    assert not colour_table.worth_a_table(np.uint8, 3, 10**9,
                                          {"labels": labels, "probabilities": probabilities})


def two_band_image(side=370, seed=0):
    """A (1, side, side, 2) uint8 image of three regions and noise: more than 2 * 2**16 pixels."""
    rng = np.random.default_rng(seed)
    means = np.array([[60, 200], [180, 70], [120, 130]])
    regions = (np.arange(side)[None, :] // 90 + np.arange(side)[:, None] // 120) % 3
    noisy = means[regions] + rng.normal(0, 12, size=(side, side, 2))
    return np.clip(noisy, 0, 255).astype(np.uint8)[None]


def test_the_job_labels_through_the_table_as_the_estimator_does(client, tmp_path):
    image = two_band_image()
    image[0, :7, :9] = 0  # no data
    write_zarr(tmp_path / "image.zarr", da.from_array(image, chunks=(1, 128, 100, 2)))
    job = {"pipeline": "segment",
           "input": {"path": str(tmp_path / "image.zarr"), "nodata": 0},
           "model": {"n_components": 3, "random_state": 0}, "training": {"sample": 3000},
           "output": {"path": str(tmp_path / "out"), "probabilities": True,
                      "log_likelihood": True}}
    with get_task_stream() as stream:
        run_pipeline(job)
    assert any("_table_part" in str(task["key"]) for task in stream.data)

    result = zarr.open_group(str(tmp_path / "out" / "result.zarr"), mode="r")
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    rows = image.reshape(-1, 2)
    valid = (rows != 0).all(axis=1)
    labels = result["labels"][...].reshape(-1)
    assert_array_equal(labels[valid], model.predict(rows[valid]))
    assert (labels[~valid] == 255).all()
    assert_allclose(result["log_likelihood"][...].reshape(-1)[valid],
                    model.score_samples(rows[valid]).astype(np.float32), rtol=1e-6)
    assert np.isnan(result["log_likelihood"][...].reshape(-1)[~valid]).all()
    assert_allclose(result["probabilities"][...].reshape(-1, 3)[valid],
                    model.predict_proba(rows[valid]).astype(np.float32), rtol=1e-6, atol=1e-30)
