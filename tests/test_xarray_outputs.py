"""Every job's result.zarr opens with ``xarray.open_zarr`` as it is: named, aligned variables.

Each array carries Zarr v3 ``dimension_names`` (``image``, ``y``, ``x``, ``component`` for
images; ``row``, ``component`` for rows), and the group's metadata is consolidated, so xarray
needs no extra argument and gives no warning.
"""

import warnings

import numpy as np
import pytest

from jobs_helpers import images, job, run_pipeline, table_rows, write_zarr

xr = pytest.importorskip("xarray")

PIXELS = ("image", "y", "x")


def open_result(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # xarray's "no consolidated metadata"
        return xr.open_zarr(folder / "result.zarr")


def dims_of(dataset):
    return {name: dataset[name].dims for name in dataset.data_vars}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    return {"images": write_zarr(folder / "images.zarr", images()),
            "rows": write_zarr(folder / "rows.zarr", table_rows())}


def test_segment_result_names_its_dims(inputs, tmp_path, client):
    spec = job("segment", inputs["images"], tmp_path / "out",
               output={"probabilities": True, "log_likelihood": True})
    run_pipeline(spec)
    result = open_result(tmp_path / "out")
    assert dims_of(result) == {"labels": PIXELS, "log_likelihood": PIXELS,
                               "probabilities": PIXELS + ("component",)}
    assert dict(result.sizes) == {"image": 2, "y": 24, "x": 24, "component": 2}
    assert result["labels"].dtype == np.uint8  # not decoded to float by the fill value
    assert "daskgmm" in result.attrs


@pytest.mark.parametrize("pipeline", ["fit", "predict"])
def test_row_results_name_their_dims(pipeline, inputs, tmp_path, client):
    sections = {"output": {"probabilities": True, "log_likelihood": True}}
    if pipeline == "predict":
        run_pipeline(job("fit", inputs["rows"], tmp_path / "model"))
        sections["model"] = {"load": str(tmp_path / "model" / "model.zarr")}
    run_pipeline(job(pipeline, inputs["rows"], tmp_path / "out", **sections))
    result = open_result(tmp_path / "out")
    assert dims_of(result) == {"labels": ("row",), "log_likelihood": ("row",),
                               "probabilities": ("row", "component")}
    assert dict(result.sizes) == {"row": len(table_rows()), "component": 2}


def test_anomaly_result_names_its_dims(inputs, tmp_path, client):
    run_pipeline(job("anomaly", inputs["rows"], tmp_path / "out"))
    assert dims_of(open_result(tmp_path / "out")) == {"scores": ("row",), "flags": ("row",)}


def test_select_result_opens_with_its_record(inputs, tmp_path, client):
    run_pipeline(job("select", inputs["rows"], tmp_path / "out"))
    result = open_result(tmp_path / "out")
    assert not result.data_vars and result.attrs["daskgmm"]["pipeline"] == "select"


def test_batch_results_name_their_dims(tmp_path, client):
    from batch_helpers import add_images, job as batch_job, run_batch

    add_images(tmp_path / "images", "a.png", "b.png")
    run_batch(batch_job(tmp_path))
    results = sorted((tmp_path / "store" / "results").iterdir())
    assert len(results) == 2
    for folder in results:
        assert dims_of(open_result(folder))["labels"] == PIXELS
