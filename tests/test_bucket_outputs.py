"""Jobs write their outputs to S3 with a commit that is atomic without a rename.

Against a real S3 server (moto's, on a loopback port; ``conftest.s3_endpoint``): every output a
job writes to ``s3://`` reads back with ``GaussianMixture.load`` and ``zarr.open_group`` on its
URL, and holds the model of the same job written to a local folder, bit for bit. A replaced
output is never seen half-replaced, a foreign object is never deleted, and a failed job leaves
the previous output as it was (see :mod:`daskgmm.object_output`).
"""

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import assert_same_model, write_zarr
from daskgmm import GaussianMixture
from daskgmm.pipelines import outputs
from jobs_helpers import (images, job, run_main, run_pipeline, run_spec, table_rows,
                          write_job)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")






def assert_same_output(bucket, key, local, arrays=None):
    """The output at ``key`` in the bucket holds the model and arrays of the ``local`` one."""
    assert_same_model(GaussianMixture.load(bucket.url(f"{key}/model.zarr"),
                                           storage_options=bucket.options()),
                      GaussianMixture.load(local / "model.zarr"))
    remote = open_result(bucket, key)
    written = zarr.open_group(str(local / "result.zarr"), mode="r")
    assert sorted(remote.array_keys()) == sorted(written.array_keys())
    for name in arrays or written.array_keys():
        assert_array_equal(remote[name][...], written[name][...], err_msg=name)
    assert remote.attrs["daskgmm"]["complete"] is True


def open_result(bucket, key):
    return zarr.open_group(bucket.url(f"{key}/result.zarr"), mode="r",
                           storage_options=bucket.options())


INPUTS = {"fit": table_rows, "anomaly": table_rows, "predict": table_rows, "segment": images}


def predict_spec(source, output, model):
    spec = job("predict", source, output, model={"load": str(model)})
    for name in ("n_components", "max_iter", "random_state"):
        del spec["model"][name]
    return spec


@pytest.mark.parametrize("pipeline", ["fit", "anomaly", "predict", "segment"])
def test_a_job_from_and_to_a_bucket_writes_what_it_writes_on_disk(tmp_path, bucket, pipeline):
    data = INPUTS[pipeline]()
    source, local = bucket.write_zarr("input.zarr", data), write_zarr(tmp_path / "in.zarr", data)
    if pipeline == "predict":
        model = GaussianMixture(2, random_state=0).fit(data)
        model.save(tmp_path / "model.zarr")
        bucket.fs.put(str(tmp_path / "model.zarr"), bucket.url("model.zarr"), recursive=True)
        remote = predict_spec(source, bucket.url("out"), bucket.url("model.zarr"))
        here = predict_spec(local, tmp_path / "local", tmp_path / "model.zarr")
    else:
        remote = job(pipeline, source, bucket.url("out"))
        here = job(pipeline, local, tmp_path / "local")
    status, log = run_spec(tmp_path, {**remote, "storage": bucket.storage()})
    assert status == 0, log
    status, log = run_spec(tmp_path, here)
    assert status == 0, log
    assert_same_output(bucket, "out", tmp_path / "local")


def fit_job(source, bucket, key="out", **model):
    return job("fit", source, bucket.url(key), storage=bucket.storage(),
               model={"random_state": 0, **model})


def bucket_keys(bucket, key):
    prefix = f"{bucket.name}/{key}/"
    bucket.fs.invalidate_cache()
    return sorted(name[len(prefix):] for name in bucket.fs.find(f"{bucket.name}/{key}"))


def chunk_keys(bucket, key, array):
    return [name for name in bucket_keys(bucket, key)
            if name.startswith(f"result.zarr/{array}/") and not name.endswith("zarr.json")]


def test_a_replaced_output_holds_only_the_new_generation(tmp_path, bucket):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    chunks, encodings = [], []
    for seed in (0, 1, 2):
        status, log = run_spec(tmp_path, fit_job(source, bucket, random_state=seed))
        assert status == 0, log
        model = GaussianMixture.load(bucket.url("out/model.zarr"),
                                     storage_options=bucket.options())
        assert model.random_state == seed
        result = open_result(bucket, "out")
        assert result.attrs["daskgmm"]["config"]["model"]["random_state"] == seed
        assert_array_equal(result["labels"][...], model.predict(table_rows()))
        record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
        encodings.append(record["committed"]["encoding"])
        chunks.append({"default" if name.startswith("result.zarr/labels/c") else "v2"
                       for name in chunk_keys(bucket, "out", "labels")})
    # Each generation's chunks are spelled in the encoding the one before did not use; the
    # one before stays (for its readers) until the next write begins, no longer.
    assert encodings == ["default", "v2", "default"]
    assert chunks == [{"default"}, {"default", "v2"}, {"default", "v2"}]
    assert not [name for name in bucket_keys(bucket, "out") if "staging" in name]


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, bucket):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    assert run_spec(tmp_path, fit_job(source, bucket))[0] == 0
    before = bucket_keys(bucket, "out")
    spec = fit_job(source, bucket, random_state=5)
    spec["output"]["overwrite"] = False
    status, log = run_spec(tmp_path, spec)
    assert status == 2 and "output.path" in log and "overwrite" in log, log
    assert bucket_keys(bucket, "out") == before


@pytest.mark.parametrize("foreign", ["notes.txt", "result.zarr/mine.csv", "model.zarr/x/c/0"])
def test_a_foreign_object_is_never_deleted_nor_replaced(tmp_path, bucket, foreign):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    assert run_spec(tmp_path, fit_job(source, bucket))[0] == 0
    bucket.fs.pipe_file(f"{bucket.name}/out/{foreign}", b"a user's")
    before = bucket_keys(bucket, "out")
    status, log = run_spec(tmp_path, fit_job(source, bucket, random_state=3))
    assert status == 2 and "output.path" in log and foreign in log, log
    assert bucket_keys(bucket, "out") == before
    assert bucket.fs.cat_file(f"{bucket.name}/out/{foreign}") == b"a user's"


def test_a_prefix_daskgmm_did_not_write_is_refused(tmp_path, bucket):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    bucket.fs.pipe_file(f"{bucket.name}/data/part-0.csv", b"1,2,3\n")
    status, log = run_spec(tmp_path, fit_job(source, bucket, key="data"))
    assert status == 2 and "not an output folder that daskgmm wrote" in log, log
    assert bucket_keys(bucket, "data") == ["part-0.csv"]


def test_an_output_overlapping_an_input_in_the_bucket_is_refused(tmp_path, bucket):
    url = bucket.write_zarr("rows.zarr", table_rows())
    status, log = run_spec(tmp_path, job("fit", url, f"{url}/out", storage=bucket.storage()))
    assert status == 2 and "overlaps input.path" in log, log


def test_a_job_failing_while_it_writes_leaves_the_committed_output_alone(tmp_path, bucket,
                                                                       monkeypatch):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    assert run_spec(tmp_path, fit_job(source, bucket))[0] == 0
    before = {name: bucket.fs.cat_file(f"{bucket.name}/out/{name}")
              for name in bucket_keys(bucket, "out") if name != ".daskgmm.json"}

    def fail(output, fitted):
        raise OSError("the disk of the model is full")

    # The arrays are in the bucket when the model fails to be written.
    monkeypatch.setattr(outputs.JobOutput, "write_model", fail)
    status, log = run_spec(tmp_path, fit_job(source, bucket, random_state=4))
    assert status == 1 and "the disk of the model is full" in log, log
    assert "the existing output there is unchanged" in log
    after = {name: bucket.fs.cat_file(f"{bucket.name}/out/{name}")
             for name in bucket_keys(bucket, "out") if name != ".daskgmm.json"}
    assert after == before
    record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
    assert record["writer"] is None


def test_the_select_jobs_files_are_published_beside_its_arrays(tmp_path, bucket):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    status, log = run_spec(tmp_path, job("select", source, bucket.url("out"),
                                        storage=bucket.storage()))
    assert status == 0, log
    status, log = run_spec(tmp_path, job("select", source, tmp_path / "local"))
    assert status == 0, log
    for name in ("scores.csv", "scores.json", "criterion.png"):
        assert bucket.fs.cat_file(f"{bucket.name}/out/{name}") == \
            (tmp_path / "local" / name).read_bytes(), name


def test_a_model_saved_to_a_bucket_loads_back_and_is_replaced_only_with_overwrite(bucket):
    from daskgmm import storage as storage_module
    from daskgmm.storage import StorageConfig

    model = GaussianMixture(2, random_state=0).fit(table_rows())
    url = bucket.url("models/m.zarr")
    with storage_module.using(StorageConfig.from_dict(bucket.storage(), "storage")):
        model.save(url)
        with pytest.raises(FileExistsError):
            model.save(url)
        GaussianMixture(3, random_state=1).fit(table_rows()).save(url, overwrite=True)
    assert GaussianMixture.load(url, storage_options=bucket.options()).n_components == 3


def dead_pid():
    """The id of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_an_output_committed_but_not_yet_published_is_read_whole_and_published_next(
        tmp_path, bucket):
    from daskgmm import storage as storage_module
    from daskgmm.object_output import Claim, Generation
    from daskgmm.storage import StorageConfig

    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    assert run_spec(tmp_path, fit_job(source, bucket))[0] == 0
    old = GaussianMixture.load(bucket.url("out/model.zarr"), storage_options=bucket.options())
    new = GaussianMixture(2, max_iter=3, random_state=9).fit(table_rows(seed=9))
    url = bucket.url("out")
    with storage_module.using(StorageConfig.from_dict(bucket.storage(), "storage")):
        # What a job killed right after its commit leaves: the record holds the new
        # generation; the bucket's metadata documents are still the old one's.
        claim = Claim.take(url, "output", "output.path")
        generation = Generation(claim)
        zarr.open_group(generation.root / "result.zarr", mode="a").attrs["daskgmm"] = {}
        from daskgmm.model_format import write_model
        write_model(generation.root / "model.zarr", new)
        claim.commit(generation)
        claim.release()
    record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
    record["writer"] = {"id": "0" * 32, "host": socket.gethostname(), "pid": dead_pid(),
                        "time": time.time()}  # its process is gone
    bucket.fs.pipe_file(f"{bucket.name}/out/.daskgmm.json", json.dumps(record).encode())
    # zarr alone still reads the old generation; daskgmm's readers read the committed one.
    raw = zarr.open_group(bucket.url("out/model.zarr"), mode="r",
                          storage_options=bucket.options())
    assert_array_equal(raw["means_"][...], old.means_)
    assert_same_model(GaussianMixture.load(bucket.url("out/model.zarr"),
                                           storage_options=bucket.options()), new)
    # The next job publishes it before it begins its own.
    status, log = run_spec(tmp_path, fit_job(source, bucket, random_state=7))
    assert status == 0, log
    raw = zarr.open_group(bucket.url("out/model.zarr"), mode="r",
                          storage_options=bucket.options())
    assert raw.attrs["params"]["random_state"] == 7


def test_a_folder_another_live_job_is_writing_is_refused(tmp_path, bucket):
    from daskgmm import storage as storage_module
    from daskgmm.object_output import Claim
    from daskgmm.storage import StorageConfig

    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    with storage_module.using(StorageConfig.from_dict(bucket.storage(), "storage")):
        claim = Claim.take(bucket.url("out"), "output", "output.path")
    try:
        status, log = run_spec(tmp_path, fit_job(source, bucket))
        assert status == 2 and "being written by another job" in log, log
    finally:
        with storage_module.using(StorageConfig.from_dict(bucket.storage(), "storage")):
            claim.release()
    assert run_spec(tmp_path, fit_job(source, bucket))[0] == 0


def test_a_claim_not_renewed_in_time_is_taken_over(tmp_path, bucket):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    assert run_spec(tmp_path, fit_job(source, bucket))[0] == 0
    record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
    record["writer"] = {"id": "0" * 32, "host": "another-pod", "pid": 1, "time": 0.0}
    bucket.fs.pipe_file(f"{bucket.name}/out/.daskgmm.json", json.dumps(record).encode())
    status, log = run_spec(tmp_path, fit_job(source, bucket, random_state=2))
    assert status == 0, log


def test_a_fit_resumed_from_its_checkpoint_in_the_bucket_gives_the_uninterrupted_model(
        tmp_path, bucket, client):
    from daskgmm import storage as storage_module
    from daskgmm.storage import StorageConfig

    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    spec = fit_job(source, bucket, max_iter=8, tol=0.0)
    del spec["cluster"]
    with storage_module.using(StorageConfig.from_dict(bucket.storage(), "storage")):
        prepared = run_pipeline(spec, crash_after=3)
    assert prepared.resumed is not None  # read back from the bucket
    assert not bucket_keys(bucket, "out.checkpoint")  # deleted once the output is committed
    resumed = GaussianMixture.load(bucket.url("out/model.zarr"), storage_options=bucket.options())
    status, log = run_spec(tmp_path, job("fit", source, tmp_path / "whole",
                                        model={"random_state": 0, "max_iter": 8, "tol": 0.0}))
    assert status == 0, log
    assert_same_model(resumed, GaussianMixture.load(tmp_path / "whole" / "model.zarr"))


# ------------------------------------------------------------------ killed writers

KILLS = 20
KILL_RUNS = 40  # runs that may end before their kill come on top, up to this many in all
CHILD_PRELOAD = ["jobs_helpers", "distributed", "s3fs", "daskgmm.pipelines.fit"]


def start_child(context, tmp_path, job_file, count):
    import os

    from jobs_helpers import run_in_child

    environ = {name: os.environ[name] for name in os.environ if name.startswith("AWS_")}
    out, err = (tmp_path / f"child-{count}.{name}" for name in ("out", "err"))
    child = context.Process(target=run_in_child,
                            args=(str(job_file), [], str(out), str(err), environ))
    child.start()
    return child, err


def seeds_read(bucket):
    """The seed of the model daskgmm reads at ``out``, of the result it reads, and of the
    result zarr alone reads; each read must succeed."""
    from daskgmm import storage as storage_module
    from daskgmm.storage import StorageConfig
    from daskgmm.store import read_attrs

    model = GaussianMixture.load(bucket.url("out/model.zarr"), storage_options=bucket.options())
    with storage_module.using(StorageConfig.from_dict(bucket.storage(), "storage")):
        record = read_attrs(bucket.url("out/result.zarr"))["daskgmm"]
    raw = open_result(bucket, "out")
    assert raw.attrs["daskgmm"]["complete"] is True
    raw["labels"][...]  # every chunk its metadata names is there
    return (model.random_state, record["config"]["model"]["random_state"],
            raw.attrs["daskgmm"]["config"]["model"]["random_state"])


def wait_for_claim(bucket, child):
    """Return once ``child`` holds the claim on the output (or has ended)."""
    while child.is_alive():
        bucket.fs.invalidate_cache()
        record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
        if (record["writer"] or {}).get("pid") == child.pid:
            return
        time.sleep(0.01)


def committed_id(bucket):
    bucket.fs.invalidate_cache()
    record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
    return (record["committed"] or {}).get("id")


class Reader(threading.Thread):
    """Reads the output with daskgmm's readers over and over while jobs write it.

    A read may fail only if the committed generation changed while it read (its chunks can go
    once a later write begins); any other failure is kept, to fail the test."""

    def __init__(self, bucket):
        super().__init__(daemon=True)
        self.bucket, self.stop, self.reads, self.failures = bucket, threading.Event(), 0, []

    def run(self):
        while not self.stop.wait(0.05):
            before = committed_id(self.bucket)
            try:
                model = GaussianMixture.load(self.bucket.url("out/model.zarr"),
                                             storage_options=self.bucket.options())
                model.predict(table_rows(10))
                self.reads += 1
            except Exception as error:
                if committed_id(self.bucket) == before:
                    self.failures.append(repr(error))


@pytest.mark.slow  # real processes, killed
def test_jobs_killed_at_random_moments_never_leave_an_output_taken_as_complete(tmp_path,
                                                                              bucket):
    import multiprocessing
    import random

    from daskgmm.object_record import classify

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(CHILD_PRELOAD)
    source = write_zarr(tmp_path / "rows.zarr", table_rows(4000))

    def job_file(seed):
        spec = fit_job(source, bucket, random_state=seed, max_iter=4, tol=0.0)
        spec["checkpoint"] = {"every": 2}
        return write_job(tmp_path / f"job-{seed}.yaml", spec)

    durations = []
    reader = Reader(bucket)
    for count in (0, 1):  # the first also starts the server the children fork from
        started = time.monotonic()
        child, err = start_child(context, tmp_path, job_file(0), count)
        child.join(120)
        assert child.exitcode == 0, err.read_text()
        durations.append(time.monotonic() - started)
        if count == 0:
            reader.start()  # from the first output on, timed with the reader running
    duration = durations[-1]
    last_good = last_published = 0
    committed = [0]  # the seeds of the generations committed so far, in order
    draw, kills, seed, mid_write = random.Random(0), 0, 0, 0
    while kills < KILLS:
        seed += 1
        assert seed <= KILL_RUNS, f"only {kills} of {seed - 1} runs were killed"
        child, err = start_child(context, tmp_path, job_file(seed), seed + 1)
        if seed % 2:  # at any moment of the run
            child.join(draw.uniform(0.02, 1.0) * duration)
        else:  # once it has claimed the output: while it writes, commits or publishes it
            wait_for_claim(bucket, child)
            child.join(draw.uniform(0.0, 0.3))
        if child.is_alive():
            child.kill()
            kills += 1
        child.join()
        record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
        writer = record["writer"] or {}
        mid_write += child.exitcode == -9 and writer.get("pid") == child.pid
        assert child.exitcode in (0, -9), err.read_text()
        seeds = seeds_read(bucket)
        # The last good output, or the killed run's own once it had committed: never a mix.
        assert seeds[0] == seeds[1] and seeds[0] in (last_good, seed), seeds
        if seeds[0] != last_good:
            committed.append(seeds[0])
        last_good = seeds[0]
        # zarr alone reads a committed generation too: the last one published, which lags
        # the last committed when a kill fell between the commit and the end of publishing.
        assert seeds[2] in committed[committed.index(last_published):], (seeds, committed)
        last_published = seeds[2]
        if child.exitcode == 0:
            assert last_good == seed
    reader.stop.set()
    reader.join()
    assert not reader.failures and reader.reads > 100, (reader.reads, reader.failures[:3])
    print(f"{kills} kills in {seed} runs, {mid_write} while the output was written, "
          f"{reader.reads} reads meanwhile")
    assert mid_write >= 5, "too few kills fell while the output was written"
    status, log = run_spec(tmp_path, fit_job(source, bucket, random_state=99))
    assert status == 0, log
    assert seeds_read(bucket) == (99, 99, 99)
    record = json.loads(bucket.fs.cat_file(f"{bucket.name}/out/.daskgmm.json"))
    assert {classify(record, key) for key in bucket_keys(bucket, "out")} == \
        {"committed", "previous"}  # the generation before stays until the next write begins


def test_the_dry_run_checks_the_output_place_is_writable_and_leaves_nothing(tmp_path, bucket):
    source = write_zarr(tmp_path / "rows.zarr", table_rows())
    job_file = write_job(tmp_path / "job.yaml", fit_job(source, bucket))
    status, out, err = run_main(job_file, "--dry-run")
    assert status == 0, err
    assert f"output: {bucket.url('out')}" in out
    assert "credentials for s3://: found by botocore (env)" in out
    assert bucket_keys(bucket, "out") == []
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket.name}/*"}]}
    bucket.fs.call_s3("put_bucket_policy", Bucket=bucket.name, Policy=json.dumps(policy))
    status, out, err = run_main(job_file, "--dry-run")
    assert status == 2, out + err
    assert "output.path" in err and bucket.url("out") in err and "denied" in err


# ------------------------------------------------------------------ batch stores in a bucket


def bucket_batch_job(tmp_path, bucket, **batch):
    from batch_helpers import job as batch_helpers_job

    return batch_helpers_job(tmp_path, input={"path": bucket.url("scenes/*.png")},
                             output={"path": bucket.url("store")}, storage=bucket.storage(),
                             batch=batch)


def bucket_manifest(bucket):
    bucket.fs.invalidate_cache()
    return json.loads(bucket.fs.cat_file(f"{bucket.name}/store/manifest.json"))


def put_images(tmp_path, bucket, *names):
    from batch_helpers import add_images

    add_images(tmp_path / "images", *names)
    for name in names:
        bucket.fs.put(str(tmp_path / "images" / name), bucket.url(f"scenes/{name}"))


def test_a_batch_store_in_a_bucket_takes_each_new_input_once_and_reads_back(tmp_path, bucket):
    put_images(tmp_path, bucket, "a.png", "b.png")
    spec = bucket_batch_job(tmp_path, bucket)
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    manifest = bucket_manifest(bucket)
    assert set(manifest["inputs"]) == {"a.png", "b.png"} and not manifest["claims"]
    labels = zarr.open_group(bucket.url("store/results/a.png/result.zarr"), mode="r",
                             storage_options=bucket.options())["labels"]
    assert labels.shape == (1, 32, 32)
    version = manifest["inputs"]["a.png"]["model"]
    model = GaussianMixture.load(bucket.url(f"store/models/{version}.zarr"),
                                 storage_options=bucket.options())
    assert model.n_components == 3
    status, log = run_spec(tmp_path, spec)
    assert status == 0 and "nothing new to process (2 input(s) done" in log, log
    put_images(tmp_path, bucket, "c.png")
    status, log = run_spec(tmp_path, spec)
    assert status == 0, log
    inputs = bucket_manifest(bucket)["inputs"]
    assert set(inputs) == {"a.png", "b.png", "c.png"}
    assert inputs["c.png"]["run"] != inputs["a.png"]["run"] == inputs["b.png"]["run"]
    runs = bucket_keys(bucket, "store/runs")
    assert len(runs) == 2  # one object per run that processed inputs


def test_a_foreign_object_at_the_top_of_a_bucket_store_is_refused(tmp_path, bucket):
    put_images(tmp_path, bucket, "a.png")
    bucket.fs.pipe_file(f"{bucket.name}/store/notes.txt", b"a user's")
    status, log = run_spec(tmp_path, bucket_batch_job(tmp_path, bucket))
    assert status == 2 and "notes.txt" in log and "output.path" in log, log
    assert bucket_keys(bucket, "store") == ["notes.txt"]


@pytest.mark.slow  # two runners in real processes
def test_two_concurrent_batch_runs_on_one_bucket_store_process_each_input_once(tmp_path,
                                                                              bucket):
    from jobs_helpers import finish_runner, start_runner

    names = [f"scene-{i}.png" for i in range(8)]
    put_images(tmp_path, bucket, *names)
    spec = bucket_batch_job(tmp_path, bucket, max_inputs=5)
    runners = [start_runner(write_job(tmp_path / f"job-{i}.yaml", spec)) for i in range(2)]
    results = [finish_runner(runner) for runner in runners]
    for result in results:
        assert result.returncode == 0, result.stderr
    manifest = bucket_manifest(bucket)
    assert set(manifest["inputs"]) == set(names) and not manifest["claims"]
    assert not manifest["runs"]  # both ended and let go of their registration
    # Each input was processed by exactly one run: the runs' logs split the inputs.
    logs = [json.loads(bucket.fs.cat_file(f"{bucket.name}/store/runs/{name}"))
            for name in bucket_keys(bucket, "store/runs")]
    done = [name for log in logs for name in log["processed"]]
    assert sorted(done) == sorted(names), logs
    assert len(logs) == 2 and all(log["status"] == "ok" for log in logs)
    for name in names:
        result = zarr.open_group(bucket.url(f"store/results/{name}/result.zarr"), mode="r",
                                 storage_options=bucket.options())
        assert result.attrs["daskgmm"]["summary"]["input"] == name


# ------------------------------------------------------------------ the README's example


@pytest.mark.slow  # worker processes: each opens the bucket from the pickled store
def test_the_shipped_bucket_to_bucket_config_runs_with_only_its_paths_changed(tmp_path, bucket):
    from pathlib import Path

    from batch_helpers import add_images

    config = Path(__file__).resolve().parents[1] / "configs" / "segment-s3.yaml"
    add_images(tmp_path / "scenes", "a.png", "b.png", size=48)
    bucket.fs.put(str(tmp_path / "scenes"), bucket.url("scenes"), recursive=True)

    def run(source, output, *more):
        status, out, err = run_main(config, "--set", f"input.path={source}",
                                    "--set", f"output.path={output}", *more)
        return status, out + err

    endpoint = f"storage.s3.endpoint_url={bucket.endpoint_url}"
    status, log = run(bucket.url("scenes/*.png"), bucket.url("results/segment"), "--set",
                      endpoint, "--dry-run")
    assert status == 0 and "credentials for s3://: found by botocore (env)" in log, log
    status, log = run(bucket.url("scenes/*.png"), bucket.url("results/segment"), "--set",
                      endpoint)
    assert status == 0, log
    status, log = run(tmp_path / "scenes" / "*.png", tmp_path / "local")
    assert status == 0, log
    assert_same_output(bucket, "results/segment", tmp_path / "local")
    for name in ("previews/image-0000.png", "previews/image-0001.png"):
        assert bucket.fs.cat_file(f"{bucket.name}/results/segment/{name}") == \
            (tmp_path / "local" / name).read_bytes()
    assert not bucket_keys(bucket, "results/segment.checkpoint")
    assert bucket_keys(bucket, "results/segment.input.zarr")  # the ingested images
