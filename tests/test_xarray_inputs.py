"""xarray Datasets and DataArrays written to Zarr by xarray, as the jobs' inputs.

The variable (``input.variable``) and its features dim (``input.feature_dim``, else a dim named
like ``band``, else the last) are read from the store; the job's model is that of the same
values as a plain Zarr array, and the variable's coordinates come out in ``result.zarr``.
"""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from jobs_helpers import images, job, run_pipeline, run_spec, table_rows, write_zarr

xr = pytest.importorskip("xarray")


def labels_of(folder):
    return zarr.open_array(folder / "result.zarr" / "labels", mode="r")[...]


def scene_dataset():
    """Two images as a Dataset ``(band, time, lat, lon)`` with coordinates, plus a second
    variable the job must not take."""
    pixels = images()  # (2, 24, 24, 3)
    values = np.moveaxis(pixels, -1, 0)
    coords = {"band": ["red", "green", "blue"], "time": [0, 1],
              "lat": np.linspace(50, 51, 24), "lon": np.linspace(4, 5, 24)}
    scene = xr.DataArray(values, dims=("band", "time", "lat", "lon"), coords=coords)
    return xr.Dataset({"reflectance": scene, "cloud": scene.isel(band=0) > 100}), pixels


def test_a_dataset_variable_segments_as_its_plain_array(tmp_path, client):
    dataset, pixels = scene_dataset()
    dataset.chunk({"time": 1}).to_zarr(tmp_path / "scene.zarr")
    run_pipeline(job("segment", tmp_path / "scene.zarr", tmp_path / "out",
                     input={"variable": "reflectance"}))
    run_pipeline(job("segment", write_zarr(tmp_path / "plain.zarr", pixels),
                     tmp_path / "plain"))
    assert_array_equal(labels_of(tmp_path / "out"), labels_of(tmp_path / "plain"))
    result = xr.open_zarr(tmp_path / "out" / "result.zarr")
    assert result["labels"].dims == ("image", "y", "x")
    assert_array_equal(result["y"], dataset["lat"])  # the input's coordinates, as y and x
    assert_array_equal(result["x"], dataset["lon"])


def test_feature_dim_names_the_features(tmp_path, client):
    rows = table_rows()
    frame = xr.DataArray(rows, dims=("sample", "measure"),
                         coords={"sample": np.arange(len(rows)) * 10}, name="rows")
    frame.to_zarr(tmp_path / "rows.zarr")
    run_pipeline(job("fit", tmp_path / "rows.zarr", tmp_path / "out",
                     input={"feature_dim": "measure"}))
    run_pipeline(job("fit", write_zarr(tmp_path / "plain.zarr", rows), tmp_path / "plain"))
    assert_array_equal(labels_of(tmp_path / "out"), labels_of(tmp_path / "plain"))
    result = xr.open_zarr(tmp_path / "out" / "result.zarr")
    assert_array_equal(result["row"], frame["sample"])
    transposed = frame.T.to_dataset()
    transposed.to_zarr(tmp_path / "columns.zarr")
    run_pipeline(job("fit", tmp_path / "columns.zarr", tmp_path / "columns",
                     input={"feature_dim": "measure"}))
    assert_array_equal(labels_of(tmp_path / "columns"), labels_of(tmp_path / "plain"))


@pytest.mark.parametrize("section, key", [
    ({"variable": "missing"}, "input.variable"),
    ({"variable": "reflectance", "feature_dim": "depth"}, "input.feature_dim"),
])
def test_bad_variables_name_the_key(tmp_path, section, key):
    scene_dataset()[0].to_zarr(tmp_path / "scene.zarr")
    status, log = run_spec(tmp_path, job("segment", tmp_path / "scene.zarr", tmp_path / "out",
                                         input=section))
    assert status == 2 and key in log
    assert not (tmp_path / "out").exists()


def test_several_variables_need_a_name(tmp_path):
    scene_dataset()[0].to_zarr(tmp_path / "scene.zarr")
    status, log = run_spec(tmp_path, job("segment", tmp_path / "scene.zarr", tmp_path / "out",
                                         input={"format": "xarray"}))
    assert status == 2 and "input.variable" in log and "reflectance" in log
