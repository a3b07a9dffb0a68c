"""Scheduled batches of the segment job: each input processed once, bad ones skipped, runs shared.

Real PNG files written with Pillow, a real LocalCluster in-process, and real
``python -m daskgmm.run`` processes for the exit status and for two runs started together.
"""

import json
import os
import socket
import threading
import time

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from PIL import Image

from batch_helpers import (
    add_images, dead_pid, job, manifest, picture, run_batch, runs, write_job_file)
from daskgmm import GaussianMixture
from daskgmm.config import BatchConfig, ConfigError, JobConfig
from daskgmm.pipelines import batch, batch_inputs, batch_lock, segment
from daskgmm.run import main
from jobs_helpers import finish_runner, run_runner, start_runner

BatchStore = batch.BatchStore

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def labels(tmp_path, name):
    group = zarr.open_group(str(tmp_path / "store" / "results" / name / "result.zarr"), mode="r")
    return group["labels"][...]


def result_stamp(tmp_path, name):
    """When an input's results were written, and by which run."""
    path = tmp_path / "store" / "results" / name / "result.zarr"
    record = zarr.open_group(str(path), mode="r").attrs["daskgmm"]
    return (path / "zarr.json").stat().st_mtime_ns, record["created"], manifest(tmp_path)[
        "inputs"][name]["run"]


def model_of(tmp_path, name):
    version = manifest(tmp_path)["inputs"][name]["model"]
    return GaussianMixture.load(tmp_path / "store" / "models" / f"{version}.zarr")


# ---------------------------------------------------------------- each input once


def test_three_runs_with_images_added_between_process_each_image_once(client, tmp_path):
    folder = tmp_path / "images"
    add_images(folder, "a.png", "b.png")
    first = run_batch(job(tmp_path))
    stamps = {name: result_stamp(tmp_path, name) for name in ("a.png", "b.png")}
    add_images(folder, "c.png")
    second = run_batch(job(tmp_path))
    add_images(folder, "d.png", "e.png")
    third = run_batch(job(tmp_path))

    assert [summary["processed"] for summary in (first, second, third)] == [
        "2 input(s): a.png, b.png", "1 input(s): c.png", "2 input(s): d.png, e.png"]
    log = runs(tmp_path)
    assert [record["processed"] for record in log] == [["a.png", "b.png"], ["c.png"],
                                                        ["d.png", "e.png"]]
    assert [record["run"] for record in log] == [first["run"], second["run"], third["run"]]
    entries = manifest(tmp_path)["inputs"]
    assert sorted(entries) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert {name: entry["run"] for name, entry in entries.items()} == {
        "a.png": first["run"], "b.png": first["run"], "c.png": second["run"],
        "d.png": third["run"], "e.png": third["run"]}
    assert all(stamps[name] == result_stamp(tmp_path, name) for name in stamps)
    assert manifest(tmp_path)["claims"] == {}
    assert not (tmp_path / "store" / "lock").exists()


def test_nothing_new_does_nothing_and_says_so(client, tmp_path):
    add_images(tmp_path / "images", "a.png")
    run_batch(job(tmp_path))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*")}
    summary = run_batch(job(tmp_path))
    assert summary["processed"].startswith("nothing new to process (1 input(s) done")
    assert "run" not in summary and "skipped" not in summary
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*")} == before
    assert len(runs(tmp_path)) == 1


def test_the_runner_opens_no_cluster_when_nothing_is_new(client, tmp_path, capsys):
    add_images(tmp_path / "images", "a.png")
    run_batch(job(tmp_path))
    assert main([str(write_job_file(tmp_path, job(tmp_path)))]) == 0
    printed = capsys.readouterr().out
    assert "nothing new to process" in printed and "dashboard:" not in printed


@pytest.mark.parametrize("identity", ["stat", "content"])
def test_a_changed_image_is_reprocessed_and_its_result_replaced(client, tmp_path, identity):
    folder = tmp_path / "images"
    add_images(folder, "a.png", "b.png")
    run_batch(job(tmp_path, batch={"identity": identity}))
    kept = result_stamp(tmp_path, "b.png")
    changed = picture(5)
    Image.fromarray(changed).save(folder / "a.png")
    summary = run_batch(job(tmp_path, batch={"identity": identity}))
    assert summary["processed"] == "1 input(s): a.png"
    assert manifest(tmp_path)["inputs"]["a.png"]["run"] == summary["run"]
    assert result_stamp(tmp_path, "b.png") == kept
    model = model_of(tmp_path, "a.png")
    assert_array_equal(labels(tmp_path, "a.png")[0], model.predict(changed.reshape(-1, 3))
                       .reshape(32, 32))


def test_labels_equal_the_estimators_for_images_of_any_size(client, tmp_path):
    written = {**add_images(tmp_path / "images", "small.png", size=24),
               **add_images(tmp_path / "images", "large.png", size=48)}
    summary = run_batch(job(tmp_path, output={"log_likelihood": True}))
    model = model_of(tmp_path, "large.png")
    assert manifest(tmp_path)["models"][summary["model"]]["fitted_on"] == ["large.png",
                                                                             "small.png"]
    for name, pixels in written.items():
        height, width, _ = pixels.shape
        found = labels(tmp_path, name)
        assert found.shape == (1, height, width) and found.dtype == np.uint8
        assert_array_equal(found[0], model.predict(pixels.reshape(-1, 3)).reshape(height, width))


def test_a_fixed_saved_model_is_applied_and_its_version_recorded(client, tmp_path):
    pixels = add_images(tmp_path / "images", "a.png", "b.png")
    model = GaussianMixture(3, random_state=1).fit(picture(3).reshape(-1, 3).astype(float))
    model.save(tmp_path / "fixed.zarr")
    fixed = job(tmp_path, model={"load": str(tmp_path / "fixed.zarr"), "n_components": None})
    summary = run_batch(fixed)
    assert summary["model"] == batch.model_version(model)
    assert manifest(tmp_path)["models"][summary["model"]]["loaded_from"] == str(
        tmp_path / "fixed.zarr")
    for name in ("a.png", "b.png"):
        assert manifest(tmp_path)["inputs"][name]["model"] == summary["model"]
        assert_array_equal(labels(tmp_path, name)[0].reshape(-1),
                           model.predict(pixels[name].reshape(-1, 3)))


def test_zarr_group_members_are_the_inputs(client, tmp_path):
    group = zarr.open_group(str(tmp_path / "images.zarr"), mode="w")
    group.create_array("first", data=picture(1).astype(np.float32))
    group.create_array("second", data=np.moveaxis(picture(2, size=16), -1, 0))
    data = job(tmp_path, input={"path": str(tmp_path / "images.zarr")})
    summary = run_batch(data)
    assert summary["processed"] == "1 input(s): first"
    # "second" is (C, H, W), read with channel_axis -1 as 16 channels
    assert summary["skipped"] == {"second": "has 16 channel(s), expected 3"}
    group.create_array("third", data=picture(3, size=16))
    assert run_batch(data)["processed"] == "1 input(s): third"
    model = model_of(tmp_path, "third")
    assert_array_equal(labels(tmp_path, "third")[0].reshape(-1),
                       model.predict(picture(3, size=16).reshape(-1, 3)))


# ---------------------------------------------------------------- bad images


@pytest.mark.slow
def test_a_corrupt_image_is_skipped_and_the_run_exits_3(client, tmp_path):
    folder = tmp_path / "images"
    add_images(folder, "a.png", "b.png", "c.png")
    add_images(folder, "rgba.png", channels=4)
    whole = (folder / "c.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "garbage.png").write_bytes(b"not a picture at all")
    done = run_runner(write_job_file(tmp_path, job(tmp_path)))
    status, out, err = done.returncode, done.stdout, done.stderr
    assert status == 3, err
    assert "processed: 3 input(s): a.png, b.png, c.png" in out
    assert "skipped: " in out and "3 input(s) skipped" in err
    failed = manifest(tmp_path)["failed"]
    assert sorted(failed) == ["garbage.png", "rgba.png", "truncated.png"]
    assert "not a readable image" in failed["garbage.png"]["reason"]
    assert "not a readable image" in failed["truncated.png"]["reason"]
    assert failed["rgba.png"]["reason"] == "has 4 channel(s), expected 3"
    assert sorted(manifest(tmp_path)["inputs"]) == ["a.png", "b.png", "c.png"]
    (record,) = runs(tmp_path)
    assert sorted(record["failures"]) == sorted(failed) and record["pixels"] == 3 * 32 * 32

    # Unchanged, a bad image is not tried again; once replaced by a good one, it is processed.
    assert run_batch(job(tmp_path))["processed"].startswith(
        "nothing new to process (3 input(s) done, 3 skipped earlier")
    add_images(folder, "truncated.png")
    summary = run_batch(job(tmp_path))
    assert summary["processed"] == "1 input(s): truncated.png" and "skipped" not in summary
    assert sorted(manifest(tmp_path)["failed"]) == ["garbage.png", "rgba.png"]


# ---------------------------------------------------------------- runs at the same time


@pytest.mark.slow
def test_two_runs_started_together_process_each_image_once(tmp_path):
    names = [f"{letter}.png" for letter in "abcd"]
    add_images(tmp_path / "images", *names)
    job_file = write_job_file(tmp_path, job(tmp_path, batch={"max_inputs": 2}))
    results = [finish_runner(process) for process in [start_runner(job_file),
                                                      start_runner(job_file)]]
    assert [done.returncode for done in results] == [0, 0], results
    log = runs(tmp_path)
    processed = [name for record in log for name in record["processed"]]
    assert sorted(processed) == names  # every image, none twice
    assert len(log) == 2 and all(len(record["processed"]) == 2 for record in log)
    entries = manifest(tmp_path)["inputs"]
    assert sorted(entries) == names
    assert {entries[name]["run"] for name in names} == {record["run"] for record in log}
    assert manifest(tmp_path)["claims"] == {} and not (tmp_path / "store" / "lock").exists()


THREE_A_RUN = BatchConfig(max_inputs=3)


def test_claims_made_at_the_same_time_are_disjoint(tmp_path):
    inputs = [batch_inputs.BatchInput(f"i{i:02d}", "unused", None, {"size": i}) for i in range(30)]
    claimed, start_together = [], threading.Barrier(8)

    def claim():
        start_together.wait()
        claimed.append(BatchStore(tmp_path / "store", THREE_A_RUN).claim(inputs))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [item.name for items in claimed for item in items]
    assert sorted(names) == [f"i{i:02d}" for i in range(24)]  # 8 runs x 3 inputs, none twice
    assert len(manifest(tmp_path)["claims"]) == 24


@pytest.mark.parametrize("holder", ["dead process", "held too long"])
def test_a_stale_lock_is_taken_over(client, tmp_path, holder):
    add_images(tmp_path / "images", "a.png")
    (tmp_path / "store").mkdir()
    pid, since = (dead_pid(), time.time()) if holder == "dead process" else \
        (os.getpid(), time.time() - 120)
    (tmp_path / "store" / "lock").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": pid, "run": "old", "time": since, "token": "x"}))
    summary = run_batch(job(tmp_path, batch={"lock_timeout": 60}))
    assert summary["processed"] == "1 input(s): a.png"
    assert not (tmp_path / "store" / "lock").exists()


def test_a_run_that_moved_a_fresh_lock_aside_puts_it_back(tmp_path):
    # Two runs found the same stale lock; the other one took it over first, so this one moves
    # the other's fresh lock aside, sees that it is not the stale one, and restores it.
    path = tmp_path / "lock"
    path.write_text("fresh")
    batch_lock.StoreLock(path, 60.0, {})._break("stale")
    assert path.read_text() == "fresh"
    # It was moved aside into the store's staging folder, which holds nothing afterwards.
    assert sorted(tmp_path.iterdir()) == [tmp_path / ".staging", path]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_a_live_lock_is_waited_for(tmp_path):
    store = BatchStore(tmp_path / "store", THREE_A_RUN)
    inputs = [batch_inputs.BatchInput("a", "unused", None, {"size": 1})]
    holder = BatchStore(tmp_path / "store", THREE_A_RUN)
    with holder._locked():
        waiting = threading.Thread(target=store.claim, args=(inputs,))
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive()  # still waiting for the lock
    waiting.join()
    assert manifest(tmp_path)["claims"]["a"]["run"] == store.run


def test_claims_of_a_dead_run_are_taken_over(client, tmp_path):
    add_images(tmp_path / "images", "a.png", "b.png")
    inputs = batch_inputs.list_inputs(JobConfig.from_dict(job(tmp_path)).input, "stat")
    dead = BatchStore(tmp_path / "store", THREE_A_RUN)
    dead.owner["pid"] = dead_pid()
    dead.claim(inputs[:1])
    assert manifest(tmp_path)["claims"]["a.png"]["pid"] == dead.owner["pid"]
    summary = run_batch(job(tmp_path))
    assert summary["processed"] == "2 input(s): a.png, b.png"
    assert manifest(tmp_path)["claims"] == {}


def test_claims_of_a_live_run_are_left_alone(client, tmp_path):
    add_images(tmp_path / "images", "a.png", "b.png")
    inputs = batch_inputs.list_inputs(JobConfig.from_dict(job(tmp_path)).input, "stat")
    BatchStore(tmp_path / "store", THREE_A_RUN).claim(inputs[:1])
    assert run_batch(job(tmp_path))["processed"] == "1 input(s): b.png"
    assert run_batch(job(tmp_path))["processed"].startswith(
        "nothing new to process (1 input(s) done, 0 skipped earlier and unchanged since, 1 "
        "being processed by another run)")


# ---------------------------------------------------------------- the job file


@pytest.mark.parametrize("changes, key", [
    ({"pipeline": "fit"}, "batch"),
    ({"output": {"path": "out", "overwrite": True}}, "output.overwrite"),
    ({"input": {"path": "images", "mask": "mask.zarr"}}, "input.mask"),
    ({"input": {"path": "images.zarr", "array": "first"}}, "input.array"),
])
def test_batch_keys_that_do_not_apply_are_refused(tmp_path, changes, key):
    with pytest.raises(ConfigError) as info:
        JobConfig.from_dict({**job(tmp_path), **changes})
    assert info.value.key == key


def test_batch_section_round_trips(tmp_path):
    data = job(tmp_path, batch={"identity": "content", "max_inputs": 5, "channels": 3,
                                "lock_timeout": 5.0, "claim_timeout": 60.0})
    full = JobConfig.from_dict(data).to_dict()
    assert JobConfig.from_dict(full).to_dict() == full and full["batch"] == data["batch"]


def test_a_folder_that_is_not_a_batch_store_is_refused(tmp_path):
    add_images(tmp_path / "images", "a.png")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "result.zarr").mkdir()
    with pytest.raises(ConfigError) as info:
        segment.prepare(JobConfig.from_dict(job(tmp_path)))
    assert info.value.key == "output.path" and "result.zarr" in info.value.message


def test_dry_run_counts_the_new_and_done_inputs(client, tmp_path):
    add_images(tmp_path / "images", "a.png")
    run_batch(job(tmp_path))
    add_images(tmp_path / "images", "b.png", "c.png")
    plan = segment.prepare(JobConfig.from_dict(job(tmp_path))).plan
    assert plan.inputs == [f"input: {tmp_path / 'images'} [images] 3 input(s): 2 new, "
                           "0 changed, 1 done, 0 failed, 0 claimed"]
    assert len(runs(tmp_path)) == 1
