"""Data as users have it: Dask arrays of unknown chunk sizes, xarray DataArrays and dask
DataFrames each give the model of the equivalent Dask array, to the bit, and stay lazy."""

import logging

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pytest
import xarray as xr

from conftest import COVARIANCE_TYPES, assert_same_model, make_blobs
from daskgmm import GaussianMixture
from daskgmm.array_inputs import as_array

CHUNK_ROWS = 250
MODEL = {"n_components": 3, "max_iter": 8, "random_state": 0, "split_every": 2}


@pytest.fixture(scope="module")
def X():
    return make_blobs(n_samples=2003)


def fit(data, covariance_type="full", **kwargs):
    return GaussianMixture(covariance_type=covariance_type, **MODEL).fit(data, **kwargs)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_unknown_chunk_sizes_are_measured_and_give_the_known_arrays_model(
        X, covariance_type, caplog, threads):
    dask_X = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    filtered = dask_X[dask_X[:, 0] > np.median(X[:, 0])]
    assert np.isnan(filtered.shape[0])
    known = filtered.copy().compute_chunk_sizes()
    assert len(known.chunks[0]) == len(dask_X.chunks[0]) and known.shape[0] < len(X)

    with caplog.at_level(logging.INFO, logger="daskgmm"):
        model = fit(filtered, covariance_type)

    assert_same_model(model, fit(known, covariance_type))
    assert "unknown chunk sizes: measured them in one pass" in caplog.text
    assert np.isnan(filtered.shape[0])  # the user's array is left as it was
    labels = model.predict(filtered)
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), model.predict(known).compute())


def test_weights_of_unknown_chunk_sizes_follow_the_rows(X, threads):
    dask_X = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    keep = dask_X[:, 0] > 0
    weights = da.from_array(np.arange(len(X)) % 3 + 1.0, chunks=CHUNK_ROWS)
    model = fit(dask_X[keep], sample_weight=weights[keep])
    expected = fit(dask_X[keep].compute_chunk_sizes(),
                   sample_weight=weights[keep].compute_chunk_sizes())
    assert_same_model(model, expected)


@pytest.mark.parametrize("dims", [("sample", "feature"), ("feature", "sample"), ("row", "col")])
def test_a_dask_backed_data_array_stays_lazy_and_gives_the_arrays_model(X, dims, threads):
    dask_X = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    values = dask_X.T if dims[0] == "feature" else dask_X
    array = xr.DataArray(values, dims=dims)

    model = fit(array)

    assert_same_model(model, fit(dask_X))
    labels = model.predict(array)
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), model.predict(dask_X).compute())


def test_a_numpy_backed_data_array_is_the_numpy_fit(X):
    assert_same_model(fit(xr.DataArray(X, dims=("sample", "band"))), fit(X))


def test_a_data_array_with_two_feature_dims_is_refused(X):
    array = xr.DataArray(X[:, :2], dims=("band", "channel"))
    with pytest.raises(ValueError, match=r"\['band', 'channel'\] could each hold the features"):
        as_array(array)


def test_a_dask_dataframe_gives_the_model_of_its_partitions_as_chunks(X, threads):
    frame = dd.from_array(X, chunksize=CHUNK_ROWS, columns=["a", "b", "c"])
    dask_X = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    weights = dd.from_array(np.arange(len(X)) % 2 + 1.0, chunksize=CHUNK_ROWS)

    model = fit(frame, sample_weight=weights)

    assert as_array(frame).chunks == dask_X.chunks
    assert_same_model(model, fit(dask_X, sample_weight=da.from_array(
        np.arange(len(X)) % 2 + 1.0, chunks=CHUNK_ROWS)))
    assert isinstance(model.predict(frame), da.Array)


def test_a_dask_dataframe_with_text_columns_names_them(X):
    frame = dd.from_array(X, chunksize=CHUNK_ROWS, columns=["a", "b", "c"])
    frame = frame.assign(name="x")
    with pytest.raises(TypeError, match=r"\['name'\] are not: select the numeric ones"):
        fit(frame)
