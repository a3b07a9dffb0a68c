"""Jobs write their outputs to S3 with a commit that is atomic without a rename.

Against a real S3 server (moto's, on a loopback port; ``conftest.s3_endpoint``): every output a
job writes to ``s3://`` reads back with ``GaussianMixture.load`` and ``zarr.open_group`` on its
URL, and holds the model of the same job written to a local folder, bit for bit. A replaced
output is never seen half-replaced, a foreign object is never deleted, and a failed job leaves
the previous output as it was (see :mod:`daskgmm.object_output`).
"""

import json

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import FITTED_ARRAYS, write_zarr
from daskgmm import GaussianMixture
from jobs_helpers import images, job, run_main, table_rows, write_job

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def storage(bucket):
    return {"s3": {"endpoint_url": bucket.endpoint_url}}


def options(bucket):
    return {"endpoint_url": bucket.endpoint_url}


def run_job(tmp_path, spec, name="job.yaml"):
    status, out, err = run_main(write_job(tmp_path / name, spec))
    return status, out + err


def assert_same_model(left, right):
    for name in FITTED_ARRAYS:
        assert_array_equal(getattr(left, name), getattr(right, name), err_msg=name)
    assert left.lower_bound_ == right.lower_bound_


def open_result(bucket, key):
    return zarr.open_group(bucket.url(f"{key}/result.zarr"), mode="r",
                           storage_options=options(bucket))


INPUTS = {"fit": table_rows, "anomaly": table_rows, "predict": table_rows, "segment": images}


@pytest.mark.parametrize("pipeline", ["fit", "anomaly", "segment"])
def test_a_job_writes_its_output_to_a_bucket_as_to_a_local_folder(tmp_path, bucket, pipeline):
    data = INPUTS[pipeline]()
    source = write_zarr(tmp_path / "input.zarr", data)
    status, log = run_job(tmp_path, job(pipeline, source, bucket.url("out"),
                                        storage=storage(bucket)))
    assert status == 0, log
    status, log = run_job(tmp_path, job(pipeline, source, tmp_path / "local"))
    assert status == 0, log
    assert_same_model(GaussianMixture.load(bucket.url("out/model.zarr"),
                                           storage_options=options(bucket)),
                      GaussianMixture.load(tmp_path / "local" / "model.zarr"))
    remote = open_result(bucket, "out")
    local = zarr.open_group(str(tmp_path / "local" / "result.zarr"), mode="r")
    assert sorted(remote.array_keys()) == sorted(local.array_keys())
    for name in local.array_keys():
        assert_array_equal(remote[name][...], local[name][...], err_msg=name)
    assert remote.attrs["daskgmm"]["complete"] is True
