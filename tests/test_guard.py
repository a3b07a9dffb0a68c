"""The guard: which paths a job may create, replace or delete, proved by ownership markers."""

import os

import pytest

from daskgmm.atomic import atomic_directory
from daskgmm.config import ConfigError
from daskgmm.guard import Guard, glob_root, real_path
from daskgmm.ownership import MARKER, entries, foreign_entries, read_marker, write_marker


def made_by_daskgmm(path, kind="output", files=("result.zarr/zarr.json", "previews/a.png")):
    """A folder committed by an atomic write, as a job leaves it."""
    with atomic_directory(real_path(path), kind) as staging:
        for name in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(name)
    return path


def test_a_committed_folder_lists_everything_it_holds(tmp_path):
    out = made_by_daskgmm(tmp_path / "out")
    marker = read_marker(out)
    assert marker["kind"] == "output" and marker["target"] == "out"
    assert set(marker["entries"]) == entries(out) == {
        "result.zarr/", "result.zarr/zarr.json", "previews/", "previews/a.png"}
    assert foreign_entries(out, "output") == []
    assert foreign_entries(out, "checkpoint") == sorted(entries(out))  # another kind's folder


@pytest.mark.parametrize("extra", ["src/", "src/main.py", "previews/notes.txt", "link"])
def test_anything_added_to_a_job_folder_is_foreign(tmp_path, extra):
    out = made_by_daskgmm(tmp_path / "out")
    if extra == "link":
        os.symlink(tmp_path, out / "link")
    elif extra.endswith("/"):
        (out / extra).mkdir()
    else:
        (out / extra).parent.mkdir(exist_ok=True)
        (out / extra).write_text("mine")
    assert extra.split("/")[0] in " ".join(foreign_entries(out, "output"))
    with pytest.raises(ConfigError, match="output.path") as error:
        Guard().check(out, "output.path", "output", replace=True)
    assert str(out) in str(error.value) and extra.rstrip("/") in str(error.value)


def test_a_folder_without_a_marker_or_with_a_forged_one_is_never_replaced(tmp_path):
    plain = tmp_path / "plain"
    (plain / "result.zarr").mkdir(parents=True)
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / MARKER).write_text("{not json")
    for path in (plain, forged):
        with pytest.raises(ConfigError, match="neither replaced nor deleted"):
            Guard().check(path, "output.path", "output", replace=True)
        with pytest.raises(ConfigError):
            Guard().remove(path, "checkpoint", "checkpoint")
        assert path.exists()


def test_empty_folders_are_replaced_only_where_allowed(tmp_path):
    (tmp_path / "empty").mkdir()
    assert Guard().check(tmp_path / "empty", "output.path", "output", replace=True,
                         empty_ok=True) == real_path(tmp_path / "empty")
    with pytest.raises(ConfigError):
        Guard().check(tmp_path / "empty", "checkpoint", "checkpoint", replace=True)


def test_an_existing_path_is_refused_without_replace(tmp_path):
    out = made_by_daskgmm(tmp_path / "out")
    with pytest.raises(ConfigError, match="exists; set it free"):
        Guard().check(out, "output.path", "output", fix="set it free")


@pytest.mark.parametrize("relation", ["equal", "inside", "holds"])
def test_a_written_path_never_overlaps_an_input(tmp_path, relation):
    data = tmp_path / "data"
    data.mkdir()
    path = {"equal": data, "inside": data / "out", "holds": tmp_path}[relation]
    guard = Guard({"input.path": str(data), "input.mask": None,
                   "model.load": "s3://bucket/model.zarr"})
    with pytest.raises(ConfigError, match="overlaps input.path"):
        guard.check(path, "output.path", "output", replace=True)


def test_inputs_are_compared_by_real_path(tmp_path):
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "alias")
    guard = Guard({"input.path": str(tmp_path / "alias")})
    with pytest.raises(ConfigError, match="overlaps input.path"):
        guard.check(tmp_path / "data" / "out", "output.path", "output")
    with pytest.raises(ConfigError, match="overlaps input.path"):
        guard.check(tmp_path / "nothing" / ".." / "data", "output.path", "output")
    assert not (tmp_path / "nothing").exists()


def test_a_glob_input_protects_its_matches_and_root(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    flat = Guard({"input.path": str(images / "*.png")})
    assert flat.check(images / "out", "output.path", "output")  # not read by a flat glob
    for path in (images / "a.png", images, tmp_path):
        with pytest.raises(ConfigError, match="overlaps input.path"):
            Guard({"input.path": str(images / "*.png")}).check(path, "output.path", "output")
    with pytest.raises(ConfigError, match="overlaps input.path"):  # a later run would read it
        Guard({"input.path": str(images / "**" / "*.png")}).check(images / "out", "k", "output")
    assert glob_root(str(tmp_path / "b[34]" / ".." / ".." / "x" / "*.png")) == tmp_path.parent / "x"


def test_paths_a_job_writes_do_not_overlap_each_other(tmp_path):
    guard = Guard()
    guard.check(tmp_path / "out", "output.path", "output")
    guard.check(tmp_path / "out.checkpoint", "checkpoint", "checkpoint")
    with pytest.raises(ConfigError, match="overlaps output.path"):
        guard.check(tmp_path / "out" / "ingest.zarr", "input.ingest_to", "ingest")
    store = guard.check(tmp_path / "store", "output.path", "batch-store", grows=True)
    assert guard.check(store / "results" / "a", "output.path", "batch-result",
                       within=store / "results")
    with pytest.raises(ConfigError, match="outside"):
        guard.check(store / "results" / ".." / ".." / "escaped", "output.path", "batch-result",
                    within=store / "results")


def test_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="which is a file"):
        Guard().check(tmp_path / "file" / "out", "output.path", "output")


def test_a_linked_output_is_written_where_the_link_points(tmp_path):
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "out")
    real = Guard().check(tmp_path / "out", "output.path", "output", replace=True, empty_ok=True)
    assert real == real_path(tmp_path / "target")
    made_by_daskgmm(real)
    assert os.path.islink(tmp_path / "out") and (tmp_path / "out" / MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "target"]


def test_remove_deletes_only_a_clean_folder_of_its_kind(tmp_path):
    checkpoint = made_by_daskgmm(tmp_path / "out.checkpoint", "checkpoint", ["zarr.json"])
    Guard().remove(checkpoint, "checkpoint", "checkpoint")
    assert not checkpoint.exists()
    Guard().remove(checkpoint, "checkpoint", "checkpoint")  # nothing there: nothing to do


def test_a_marker_is_written_whole(tmp_path):
    write_marker(tmp_path, "ingest", "x.zarr", complete=False)
    assert read_marker(tmp_path)["kind"] == "ingest" and "entries" not in read_marker(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER]
