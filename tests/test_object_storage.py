"""Jobs read their inputs and saved models from S3 as they read local ones.

Against a real S3 server (moto's, on a loopback port; ``conftest.s3_endpoint``), reached through
s3fs with the endpoint the job's ``storage`` section gives: the jobs' models are those of the same
jobs on local copies, bit for bit, and a missing object, a refused read or a secret in the job
file is an error that names the key, the URL and the fix (exit status 2).
"""

import json

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import assert_same_model, write_zarr
from daskgmm import GaussianMixture
from daskgmm.config import ConfigError, JobConfig
from jobs_helpers import (IMAGE_SIDE, TINY_CLUSTER, images, job, run_main, run_spec,
                          table_rows, write_job, write_pngs)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")





@pytest.mark.parametrize("pipeline", ["fit", "anomaly"])
def test_a_table_job_reads_a_zarr_store_in_a_bucket_as_a_local_one(tmp_path, bucket, pipeline):
    rows = table_rows()
    url = bucket.write_zarr("rows.zarr", rows)
    local = write_zarr(tmp_path / "rows.zarr", rows)
    status, log = run_spec(tmp_path, job(pipeline, url, tmp_path / "from-s3",
                                        storage=bucket.storage()))
    assert status == 0, log
    status, log = run_spec(tmp_path, job(pipeline, local, tmp_path / "from-disk"))
    assert status == 0, log
    assert_same_model(GaussianMixture.load(tmp_path / "from-s3" / "model.zarr"),
                      GaussianMixture.load(tmp_path / "from-disk" / "model.zarr"))


@pytest.mark.slow  # worker processes: the bucket's filesystem reaches them pickled
def test_the_segment_job_reads_an_image_in_a_bucket_from_worker_processes(tmp_path, bucket):
    pictures = images()
    url = bucket.write_zarr("images.zarr", pictures)
    cluster = {**TINY_CLUSTER, "processes": True}
    status, log = run_spec(tmp_path, job("segment", url, tmp_path / "from-s3", cluster=cluster,
                                        storage=bucket.storage()))
    assert status == 0, log
    local = write_zarr(tmp_path / "images.zarr", pictures)
    status, log = run_spec(tmp_path, job("segment", local, tmp_path / "from-disk"))
    assert status == 0, log
    results = [zarr.open_group(str(tmp_path / name / "result.zarr"), mode="r")
               for name in ("from-s3", "from-disk")]
    assert_array_equal(results[0]["labels"][...], results[1]["labels"][...])
    assert_same_model(GaussianMixture.load(tmp_path / "from-s3" / "model.zarr"),
                      GaussianMixture.load(tmp_path / "from-disk" / "model.zarr"))


def test_an_array_of_a_group_and_a_mask_in_a_bucket_are_read_as_local_ones(tmp_path, bucket):
    pictures = images()
    mask = np.ones(pictures.shape[:3], dtype=bool)
    mask[:, :4] = False
    group = zarr.open_group(bucket.url("scene.zarr"), mode="w",
                            storage_options={"endpoint_url": bucket.endpoint_url})
    group.create_array("rgb", data=pictures)
    local = zarr.open_group(str(tmp_path / "scene.zarr"), mode="w")
    local.create_array("rgb", data=pictures)
    runs = {"from-s3": (bucket.url("scene.zarr"), bucket.write_zarr("mask.zarr", mask)),
            "from-disk": (str(tmp_path / "scene.zarr"), write_zarr(tmp_path / "mask.zarr", mask))}
    for name, (scene, mask_path) in runs.items():
        spec = job("segment", scene, tmp_path / name, storage=bucket.storage(),
                   input={"array": "rgb", "mask": str(mask_path)})
        status, log = run_spec(tmp_path, spec)
        assert status == 0, log
    labels = [zarr.open_group(str(tmp_path / name / "result.zarr"), mode="r")["labels"][...]
              for name in runs]
    assert_array_equal(labels[0], labels[1])
    assert (labels[0][:, :4] == 255).all()  # masked: the no-data label


@pytest.mark.parametrize("pattern", ["images/*.png", "images"])  # a glob; a prefix
def test_image_files_in_a_bucket_are_segmented_as_local_ones(tmp_path, bucket, pattern):
    local = write_pngs(tmp_path / "images")
    bucket.fs.put(str(local), bucket.url("images"), recursive=True)
    runs = {"from-s3": bucket.url(pattern), "from-disk": str(tmp_path / pattern)}
    for name, path in runs.items():
        status, log = run_spec(tmp_path, job("segment", path, tmp_path / name,
                                            storage=bucket.storage()))
        assert status == 0, log
    labels = [zarr.open_group(str(tmp_path / name / "result.zarr"), mode="r")["labels"][...]
              for name in runs]
    assert labels[0].shape == (2, IMAGE_SIDE, IMAGE_SIDE)
    assert_array_equal(labels[0], labels[1])


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_table_files_in_a_bucket_are_fitted_as_local_ones(tmp_path, bucket, kind):
    import pandas as pd

    frame = pd.DataFrame(table_rows(), columns=["a", "b", "c"])
    local = tmp_path / f"rows.{kind}"
    frame.to_csv(local, index=False) if kind == "csv" else frame.to_parquet(local)
    bucket.fs.put(str(local), bucket.url(f"tables/rows.{kind}"))
    runs = {"from-s3": bucket.url(f"tables/*.{kind}"), "from-disk": str(local)}
    for name, path in runs.items():
        status, log = run_spec(tmp_path, job("fit", path, tmp_path / name,
                                            storage=bucket.storage()))
        assert status == 0, log
    assert_same_model(GaussianMixture.load(tmp_path / "from-s3" / "model.zarr"),
                      GaussianMixture.load(tmp_path / "from-disk" / "model.zarr"))


def test_a_saved_model_in_a_bucket_is_loaded_and_applied(tmp_path, bucket):
    rows = table_rows()
    status, log = run_spec(tmp_path, job("fit", write_zarr(tmp_path / "rows.zarr", rows),
                                        tmp_path / "fitted"))
    assert status == 0, log
    bucket.fs.put(str(tmp_path / "fitted" / "model.zarr"), bucket.url("model.zarr"),
                  recursive=True)
    fitted = GaussianMixture.load(tmp_path / "fitted" / "model.zarr")
    loaded = GaussianMixture.load(bucket.url("model.zarr"),
                                  storage_options={"endpoint_url": bucket.endpoint_url})
    assert_same_model(loaded, fitted)

    spec = predict_job(bucket.write_zarr("rows.zarr", rows), bucket.url("model.zarr"),
                       tmp_path / "predicted", bucket)
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    labels = zarr.open_group(str(tmp_path / "predicted" / "result.zarr"), mode="r")["labels"]
    assert_array_equal(labels[...], fitted.predict(rows))


def predict_job(input_path, model_path, output_path, bucket):
    spec = job("predict", input_path, output_path, model={"load": model_path},
               storage=bucket.storage())
    del spec["model"]["n_components"], spec["model"]["max_iter"]
    return spec


@pytest.mark.parametrize("key", ["input.path", "model.load"])
def test_a_missing_object_is_an_error_naming_the_key_and_the_url(tmp_path, bucket, key):
    missing = bucket.url("nothing-here.zarr")
    if key == "input.path":
        spec = job("fit", missing, tmp_path / "out", storage=bucket.storage())
    else:
        spec = predict_job(bucket.write_zarr("rows.zarr", table_rows()), missing,
                           tmp_path / "out", bucket)
    status, log = run_spec(tmp_path, spec)
    assert status == 2, log
    assert key in log and missing in log
    assert not (tmp_path / "out").exists()


def test_a_refused_read_names_the_url_and_the_credentials_found(tmp_path, bucket):
    url = bucket.write_zarr("rows.zarr", table_rows())
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket.name}/*"}]}
    bucket.fs.call_s3("put_bucket_policy", Bucket=bucket.name, Policy=json.dumps(policy))
    status, log = run_spec(tmp_path, job("fit", url, tmp_path / "out", storage=bucket.storage()))
    assert status == 2, log
    assert "input.path" in log and url in log and "denied" in log
    assert "found by botocore (env)" in log  # the dummy AWS_ACCESS_KEY_ID of the fixture
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheme, secret, source", [("s3", "secret", "AWS_ACCESS_KEY_ID"),
                                                    ("gcs", "token", "GOOGLE_APPLICATION"),
                                                    ("az", "account_key", "AZURE_STORAGE")])
def test_secrets_are_refused_in_the_job_file(tmp_path, scheme, secret, source):
    spec = job("fit", "s3://bucket/rows.zarr", tmp_path / "out",
               storage={scheme: {secret: "do-not-write-me-here"}})
    with pytest.raises(ConfigError) as refused:
        JobConfig.from_dict(spec)
    assert refused.value.key == f"storage.{scheme}.{secret}"
    assert source in str(refused.value) and "do-not-write-me-here" not in str(refused.value)


def test_the_storage_section_gives_fsspec_its_options():
    config = JobConfig.from_dict(job("fit", "s3://bucket/rows.zarr", "out", storage={
        "s3": {"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1",
               "profile": "batch"},
        "gcs": {"anon": True, "project": "p"}, "az": {"account_name": "acct"}}))
    from daskgmm import storage

    with storage.using(config.storage):
        s3 = storage.storage_options("s3://bucket/rows.zarr")
        assert s3["client_kwargs"] == {"region_name": "eu-west-1",
                                       "endpoint_url": "http://127.0.0.1:9000"}
        assert s3["profile"] == "batch" and s3["anon"] is False
        assert s3["config_kwargs"]["retries"]["mode"] == "adaptive"  # reads retried, backed off
        assert storage.storage_options("gs://b/x") == {"token": "anon", "project": "p"}
        assert storage.storage_options("abfs://c/x") == {"anon": False, "account_name": "acct"}
        assert storage.storage_options("/local/path") == {}
    assert storage.storage_options("s3://bucket/rows.zarr") == {}  # outside the job: defaults


def test_the_dry_run_opens_the_inputs_in_the_bucket_and_names_the_credentials(tmp_path,
                                                                                 bucket):
    url = bucket.write_zarr("rows.zarr", table_rows())
    job_file = write_job(tmp_path / "job.yaml",
                         job("fit", url, tmp_path / "out", storage=bucket.storage()))
    status, out, err = run_main(job_file, "--dry-run")
    assert status == 0, err
    assert f"input: {url} [zarr] shape (600, 3)" in out
    assert "credentials for s3://: found by botocore (env)" in out
    assert not (tmp_path / "out").exists()


def test_the_readmes_storage_section_is_a_valid_one():
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [text for text in re.findall(r"```yaml\n(.*?)```", readme, re.S)
                if text.startswith("storage:")]
    config = JobConfig.from_dict(job("fit", "s3://bucket/rows.zarr", "out",
                                     **yaml.safe_load(block)))
    assert config.storage.s3.endpoint_url == "https://minio.example.org:9000"


# ------------------------------------------------------------------ batches over a bucket


def batch_job(tmp_path, path, bucket, **batch):
    from batch_helpers import job as batch_helpers_job

    return batch_helpers_job(tmp_path, input={"path": path}, storage=bucket.storage(),
                             batch=batch)


def processed(tmp_path):
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    return set(manifest["inputs"])  # the inputs done, each with its result


@pytest.mark.parametrize("identity", ["stat", "content"])
def test_a_batch_over_images_in_a_bucket_processes_each_new_or_changed_one_once(tmp_path,
                                                                              bucket, identity):
    from batch_helpers import add_images

    add_images(tmp_path / "images", "a.png", "b.png")
    bucket.fs.put(str(tmp_path / "images"), bucket.url("scenes"), recursive=True)
    spec = batch_job(tmp_path, bucket.url("scenes/*.png"), bucket, identity=identity)
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    assert processed(tmp_path) == {"a.png", "b.png"}
    labels = zarr.open_group(str(tmp_path / "store" / "results" / "a.png" / "result.zarr"),
                             mode="r")["labels"]
    assert labels.shape == (1, 32, 32)

    status, log = run_spec(tmp_path, spec)
    assert status == 0 and "nothing new to process (2 input(s) done" in log, log
    add_images(tmp_path / "more", "c.png")
    add_images(tmp_path / "more", "a.png", size=40)  # a.png rewritten: changed
    bucket.fs.put(str(tmp_path / "more" / "c.png"), bucket.url("scenes/c.png"))
    bucket.fs.put(str(tmp_path / "more" / "a.png"), bucket.url("scenes/a.png"))
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    inputs = json.loads((tmp_path / "store" / "manifest.json").read_text())["inputs"]
    assert set(inputs) == {"a.png", "b.png", "c.png"}
    assert inputs["a.png"]["run"] == inputs["c.png"]["run"] != inputs["b.png"]["run"]
    labels = zarr.open_group(str(tmp_path / "store" / "results" / "a.png" / "result.zarr"),
                             mode="r")["labels"]
    assert labels.shape == (1, 40, 40)


def test_a_batch_over_a_zarr_group_in_a_bucket_takes_each_array_as_an_input(tmp_path, bucket):
    from batch_helpers import picture

    group = zarr.open_group(bucket.url("arrays.zarr"), mode="w",
                            storage_options={"endpoint_url": bucket.endpoint_url})
    for name, seed in (("first", 1), ("second", 2)):
        group.create_array(name, data=picture(seed))
    status, log = run_spec(tmp_path, batch_job(tmp_path, bucket.url("arrays.zarr"), bucket))
    assert status == 0, log
    assert processed(tmp_path) == {"first", "second"}


def test_a_url_no_installed_filesystem_serves_is_refused_naming_the_key():
    from daskgmm.storage import check_url

    with pytest.raises(ConfigError) as refused:
        check_url("nosuchfs://bucket/rows.zarr", "input.path")
    assert refused.value.key == "input.path" and "nosuchfs://" in str(refused.value)
    check_url("s3://bucket/rows.zarr", "input.path")  # s3fs is installed: no refusal
    check_url("/a/local/path", "input.path")
