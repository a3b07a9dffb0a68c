"""Batch stores survive the faults a scheduled job meets (issue 10, batch items).

One test per symptom: a run killed while writing the manifest (4), one bad member of a Zarr group
(5), inputs named like staging folders (6), a glob whose ``..`` follows a wildcard (7), long file
names (8), a killed run never logged (13a), deleted inputs failed forever (13b); and the store's
marker and layout they rely on. Real PNG files (Pillow), Zarr groups (zarr), the module's
in-process cluster; the runner in a subprocess where its exit status is the point.
"""

import json
import os
import socket
import uuid

import pytest
import zarr

from batch_helpers import (
    add_images, dead_pid, job, manifest, picture, run_batch, runs, write_job_file)
from daskgmm import atomic
from daskgmm.config import BatchConfig, ConfigError, JobConfig
from daskgmm.ownership import MARKER, read_marker
from daskgmm.pipelines import batch, batch_inputs, batch_manifest, segment
from jobs_helpers import run_runner


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

HOST = socket.gethostname()
LAYOUT = {".daskgmm.json", "manifest.json", "runs.jsonl", "results", "models", ".staging"}


def store_of(tmp_path):
    return tmp_path / "store"


def left_by_a_dead_run(parent, kind, target):
    """A staging folder as a run killed while writing it leaves it: its marker names a process
    that is gone."""
    folder = atomic.new_staging(parent, kind, target)
    marker = read_marker(folder)
    (folder / MARKER).write_text(json.dumps({**marker, "pid": dead_pid()}))
    return folder


def results_listed_exist(tmp_path):
    """Whether every result the manifest lists is in place (its result.zarr is complete)."""
    for entry in manifest(tmp_path)["inputs"].values():
        group = zarr.open_group(str(store_of(tmp_path) / entry["result"] / "result.zarr"),
                                mode="r")
        if not group.attrs["daskgmm"]["complete"]:
            return False
    return True


def listed(data):
    config = JobConfig.from_dict(data)
    return batch_inputs.list_inputs(config.input, config.batch.identity)


# ---------------------------------------------------------------- 4: killed writing the manifest


@pytest.mark.parametrize("version", ["earlier", "this"])
def test_a_run_killed_writing_the_manifest_leaves_a_store_later_runs_use(client, tmp_path,
                                                                          version):
    add_images(tmp_path / "images", "a.png")
    run_batch(job(tmp_path))
    store = store_of(tmp_path)
    half = (store / "manifest.json").read_text()[:40]
    if version == "earlier":  # the temporary name daskgmm gave it before
        leftover = store / f".manifest.json.{uuid.uuid4().hex[:8]}"
        leftover.write_text(half)
    else:
        leftover = left_by_a_dead_run(store / ".staging", "batch-manifest", "manifest.json")
        (leftover / "manifest.json").write_text(half)
    add_images(tmp_path / "images", "b.png")

    summary = run_batch(job(tmp_path))
    assert summary["processed"] == "1 input(s): b.png"
    assert not leftover.exists()
    assert sorted(manifest(tmp_path)["inputs"]) == ["a.png", "b.png"]
    assert {p.name for p in store.iterdir()} <= LAYOUT and not any(store.joinpath(
        ".staging").iterdir())


# ---------------------------------------------------------------- 5: one bad Zarr member


def damage(member, how):
    """Damage one array of a Zarr group as a failing disk or a killed writer would."""
    if how == "metadata":
        (member / "zarr.json").write_text("{not json")
        return
    chunk = sorted(f for f in (member / "c").rglob("*") if f.is_file())[0]
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2] if how == "truncated chunk" else b"\x07" * len(data))


def group_of_three(tmp_path):
    group = zarr.open_group(str(tmp_path / "images.zarr"), mode="w")
    for seed, name in enumerate(("a", "b", "c")):
        group.create_array(name, data=picture(seed, size=16), chunks=(8, 8, 3))
    group.create_group("masks")  # a subgroup is not an input
    return tmp_path / "images.zarr"


@pytest.mark.parametrize("how", ["metadata", "truncated chunk", "corrupt chunk"])
def test_one_bad_zarr_member_is_skipped_and_the_others_processed(client, tmp_path, how):
    path = group_of_three(tmp_path)
    damage(path / "b", how)
    data = job(tmp_path, input={"path": str(path)})
    plan = segment.prepare(JobConfig.from_dict(data)).plan  # listing opens no member
    assert "3 input(s): 3 new" in plan.inputs[0]

    summary = run_batch(data)
    assert summary["processed"] == "2 input(s): a, c"
    assert list(summary["skipped"]) == ["b"] and "not a readable Zarr array" in \
        summary["skipped"]["b"]
    entries = manifest(tmp_path)
    assert sorted(entries["inputs"]) == ["a", "c"] and sorted(entries["failed"]) == ["b"]
    assert entries["models"][summary["model"]]["fitted_on"] == ["a", "c"]  # b never read
    assert results_listed_exist(tmp_path)
    assert not (store_of(tmp_path) / "results" / "b").exists()


@pytest.mark.slow
def test_the_runner_exits_3_for_a_bad_zarr_member(tmp_path):
    path = group_of_three(tmp_path)
    damage(path / "b", "metadata")
    data = job(tmp_path, input={"path": str(path)},
               cluster={"n_workers": 1, "threads_per_worker": 1})
    done = run_runner(write_job_file(tmp_path, data))
    status, out, err = done.returncode, done.stdout, done.stderr
    assert status == 3, err
    assert "processed: 2 input(s): a, c" in out and "skipped: b not a readable Zarr array" in out


# ---------------------------------------------------------------- 6: names like staging names


def staging_like_names():
    dead = dead_pid()
    return {"earlier png": ("x.png", f".x.png.incomplete-{HOST}-{dead}-0123abcd.png"),
            "earlier zarr": ("x", f".x.incomplete-{HOST}-{dead}-0123abcd"),
            "this png": ("x.png", f"{atomic.STAGING_PREFIX}{uuid.uuid4().hex}.png")}


@pytest.mark.parametrize("case", ["earlier png", "earlier zarr", "this png"])
def test_inputs_named_like_staging_folders_keep_their_results(client, tmp_path, case):
    plain, lookalike = staging_like_names()[case]
    if case.endswith("zarr"):
        group = zarr.open_group(str(tmp_path / "images.zarr"), mode="w")
        for seed, name in enumerate((lookalike, plain)):
            group.create_array(name, data=picture(seed, size=16))
        data = job(tmp_path, input={"path": str(tmp_path / "images.zarr")})
    else:
        add_images(tmp_path / "images", lookalike, plain, size=16)
        data = job(tmp_path)
    one_a_run = job(tmp_path, input=data["input"], batch={"max_inputs": 1})
    # The look-alike (sorted first) is done by one run, the other input by the next one.
    assert run_batch(one_a_run)["processed"] == f"1 input(s): {lookalike}"
    assert run_batch(one_a_run)["processed"] == f"1 input(s): {plain}"
    assert run_batch(data)["processed"].startswith("nothing new to process (2 input(s) done")

    assert sorted(manifest(tmp_path)["inputs"]) == sorted([lookalike, plain])
    assert results_listed_exist(tmp_path)


# ---------------------------------------------------------------- 7: results stay in results/


def test_a_glob_with_dotdot_after_a_wildcard_keeps_results_in_the_store(client, tmp_path):
    for folder in ("b3", "b4"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    add_images(tmp_path / "imgs", "a.png", "b.png", size=16)
    pattern = tmp_path / "data" / "b[34]" / ".." / ".." / "imgs" / "*.png"
    data = job(tmp_path, input={"path": str(pattern)})

    summary = run_batch(data)
    assert summary["processed"] == "2 input(s): a.png, b.png"  # each once, not via b3 and b4
    store = store_of(tmp_path)
    results = sorted(p.relative_to(store).as_posix() for p in store.rglob("result.zarr"))
    assert results == ["results/a.png/result.zarr", "results/b.png/result.zarr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "imgs", "store"]
    assert [record["processed"] for record in runs(tmp_path)] == [["a.png", "b.png"]]


def test_one_file_is_one_input_however_the_glob_spells_it(tmp_path):
    add_images(tmp_path / "imgs", "a.png", "b.png", size=8)
    os.symlink(tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "same-as-a.png")
    (tmp_path / "imgs" / "sub").mkdir()
    spelled = tmp_path / "imgs" / "sub" / ".." / "*.png"
    keys = [item.name for item in listed(job(tmp_path, input={"path": str(spelled)}))]
    assert keys == ["a.png", "b.png"]
    for item in listed(job(tmp_path, input={"path": str(spelled)})):
        assert not item.name.startswith("..") and not os.path.isabs(item.name)


# ---------------------------------------------------------------- 8: long file names


@pytest.mark.parametrize("length", [240, 255])
def test_an_image_with_a_long_name_is_processed(client, tmp_path, length):
    name = "n" * (length - 4) + ".png"
    add_images(tmp_path / "images", name, "short.png", size=16)
    summary = run_batch(job(tmp_path, output={"preview": True}))
    assert summary["processed"] == f"2 input(s): {name}, short.png"
    assert "skipped" not in summary and manifest(tmp_path)["failed"] == {}
    assert (store_of(tmp_path) / "results" / name / "previews" / "image-0000.png").is_file()
    assert results_listed_exist(tmp_path)


# ---------------------------------------------------------------- 13a: killed runs are logged


def test_a_killed_run_gets_a_killed_line_from_the_next_run(client, tmp_path):
    add_images(tmp_path / "images", "a.png", "b.png", "c.png", size=16)
    inputs = listed(job(tmp_path))
    killed = batch.BatchStore(store_of(tmp_path), BatchConfig(max_inputs=2))
    killed.owner["pid"] = dead_pid()  # a run that claimed two inputs, then was killed
    assert [item.name for item in killed.claim(inputs)] == ["a.png", "b.png"]

    summary = run_batch(job(tmp_path))
    assert summary["processed"] == "3 input(s): a.png, b.png, c.png"
    first, second = runs(tmp_path)
    assert first["run"] == killed.run and first["status"] == "killed"
    assert first["claimed"] == ["a.png", "b.png"] and first["processed"] == []
    assert first["pid"] == killed.owner["pid"] and first["found_by"] == summary["run"]
    assert second["run"] == summary["run"] and second["status"] == "ok"
    assert manifest(tmp_path)["runs"] == {} and manifest(tmp_path)["claims"] == {}


def test_a_run_killed_after_logging_its_end_is_not_logged_twice(client, tmp_path):
    add_images(tmp_path / "images", "a.png", size=16)
    inputs = listed(job(tmp_path))
    ended = batch.BatchStore(store_of(tmp_path), BatchConfig())
    ended.owner["pid"] = dead_pid()
    ended.claim(inputs)
    batch_manifest.append_runs(ended.root, [{**ended.owner, "status": "ok",
                                            "claimed": ["a.png"]}])
    with open(store_of(tmp_path) / "runs.jsonl", "a") as log:
        log.write('{"run": "cut short by a kil')  # a line a killed run left cut
    run_batch(job(tmp_path))
    assert [line["status"] for line in runs(tmp_path)] == ["ok", "ok"]
    assert all(json.loads(line) for line in
               (store_of(tmp_path) / "runs.jsonl").read_text().splitlines())
    assert manifest(tmp_path)["runs"] == {}


# ---------------------------------------------------------------- 13b: deleted inputs


def test_a_deleted_input_leaves_the_failed_list(client, tmp_path):
    folder = tmp_path / "images"
    add_images(folder, "a.png", size=16)
    (folder / "garbage.png").write_bytes(b"not a picture")
    assert list(run_batch(job(tmp_path))["skipped"]) == ["garbage.png"]
    (folder / "garbage.png").unlink()
    # Nothing is new, but the store has something to tidy: the run does it.
    prepared = segment.prepare(JobConfig.from_dict(job(tmp_path)))
    assert prepared.nothing_to_do is None
    assert segment.run(prepared)["processed"].startswith("nothing new to process (1 input(s)")
    assert manifest(tmp_path)["failed"] == {} and sorted(manifest(tmp_path)["inputs"]) == [
        "a.png"]
    assert segment.prepare(JobConfig.from_dict(job(tmp_path))).nothing_to_do is not None


# ---------------------------------------------------------------- the store itself


def test_a_store_is_marked_and_holds_only_its_layout(client, tmp_path):
    add_images(tmp_path / "images", "a.png", size=16)
    run_batch(job(tmp_path))
    store = store_of(tmp_path)
    assert read_marker(store)["kind"] == "batch-store"
    assert {p.name for p in store.iterdir()} == LAYOUT
    (store / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as info:
        segment.prepare(JobConfig.from_dict(job(tmp_path)))
    assert info.value.key == "output.path"
    assert str(store) in info.value.message and "notes.txt" in info.value.message


def test_a_store_of_the_previous_format_is_accepted_and_marked(client, tmp_path):
    add_images(tmp_path / "images", "a.png", size=16)
    run_batch(job(tmp_path))
    store = store_of(tmp_path)
    (store / MARKER).unlink()
    os.rmdir(store / ".staging")
    add_images(tmp_path / "images", "b.png", size=16)
    assert run_batch(job(tmp_path))["processed"] == "1 input(s): b.png"
    assert read_marker(store)["kind"] == "batch-store"


def test_another_daskgmm_folder_is_not_taken_for_a_store(tmp_path):
    store = store_of(tmp_path)
    store.mkdir()
    (store / MARKER).write_text(json.dumps({"format": "daskgmm.owned", "kind": "output",
                                            "target": "store", "entries": []}))
    with pytest.raises(ConfigError, match="output folder, not a batch store"):
        batch.BatchStore(store, BatchConfig()).check()


def test_leftovers_of_dead_runs_are_removed_and_those_of_live_ones_kept(client, tmp_path):
    add_images(tmp_path / "images", "a.png", size=16)
    run_batch(job(tmp_path))
    store = store_of(tmp_path)
    dead = [left_by_a_dead_run(store / ".staging", kind, target)
            for kind, target in (("batch-result", "a.png"), ("model", "x.zarr"),
                                 ("batch-lock", "lock"))]
    sealed = left_by_a_dead_run(store / ".staging", "model", "y.zarr")  # killed as it swapped
    (sealed / MARKER).write_text(json.dumps({**read_marker(sealed), "entries": []}))
    unborn = store / ".staging" / f"{atomic.STAGING_PREFIX}{uuid.uuid4().hex}"
    unborn.mkdir()  # killed as it removed one, after its marker
    dead += [sealed, unborn]
    live = atomic.new_staging(store / ".staging", "batch-result", "b.png")  # this process's
    earlier = store / "results" / f".b.png.incomplete-{HOST}-{dead_pid()}-89abcdef"
    earlier.mkdir()
    stale_lock = store / f".lock.stale-{uuid.uuid4().hex[:8]}"
    stale_lock.write_text("{}")  # moved aside longer ago than the lock_timeout below
    add_images(tmp_path / "images", "b.png", size=16)
    run_batch(job(tmp_path, batch={"lock_timeout": 1e-6}))
    assert not any(path.exists() for path in dead + [earlier, stale_lock])
    assert live.is_dir()
