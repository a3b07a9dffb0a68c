"""A job changes nothing but its own outputs, and refuses (exit 2) rather than lose a user's files.

Each test puts a user's folder, file, link or Zarr store where a job writes (its checkpoint, its
ingest store, its output, a folder on the way there), runs the job in-process on a one-worker
cluster, and compares a digest of every file before and after. A refusal is exit status 2 and
one message naming the config key and the path, with nothing written.
"""

import numpy as np
import pytest
import zarr
from numpy.testing import assert_allclose, assert_array_equal

from daskgmm import GaussianMixture
from jobs_helpers import (
    images,
    is_complete_output,
    job,
    run_main,
    table_rows,
    tree_changes,
    tree_digest,
    write_job,
    write_pngs,
    write_user_folder,
    write_zarr,
)


@pytest.fixture
def table(tmp_path):
    """A user's table: a 2-D Zarr array of 600 rows of 3 float64 features."""
    return write_zarr(tmp_path / "table.zarr", table_rows())


@pytest.fixture
def png_folder(tmp_path):
    """A user's folder of two 24x24 RGB PNG files."""
    return write_pngs(tmp_path / "pngs")


def run(tmp_path, spec, *args):
    """Write ``spec`` beside the data and run it; return status, stdout, stderr."""
    return run_main(write_job(tmp_path / "job.yaml", spec), *args)


def assert_refused(status, stderr, keys, *named):
    """Exit status 2, one ``error: <file>: <key>: ...`` message, its key one of ``keys``, naming
    every one of ``named`` too."""
    keys = (keys,) if isinstance(keys, str) else keys
    assert status == 2, f"status {status}, not a refusal:\n{stderr}"
    assert stderr.startswith("error: "), f"the job did work before it refused:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert stderr.split(": ")[2] in keys, f"the key named is not one of {keys}:\n{stderr}"
    for words in named:
        assert str(words) in stderr, f"{words!r} not named:\n{stderr}"


def assert_unchanged(before, root):
    assert tree_changes(before, tree_digest(root)) == []


def assert_job_refused(tmp_path, job_data, key, named):
    """Run ``job_data`` from ``tmp_path``: refused with ``key`` and ``named``, nothing changed."""
    write_job(tmp_path / "job.yaml", job_data)
    before = tree_digest(tmp_path)
    status, _, stderr = run_main(tmp_path / "job.yaml")
    assert_refused(status, stderr, key, named)
    assert_unchanged(before, tmp_path)


# ------------------------------------------------------------------ (1) the checkpoint path


def test_a_users_folder_at_the_checkpoint_path_is_refused(tmp_path, table):
    mine = write_user_folder(tmp_path / "out.checkpoint")
    assert_job_refused(tmp_path, job("fit", table, tmp_path / "out"),
                       "checkpoint", mine)


def test_a_disabled_checkpoint_leaves_a_users_folder_there_alone(tmp_path, table):
    mine = write_user_folder(tmp_path / "out.checkpoint")
    kept = tree_digest(mine)
    status, _, stderr = run(tmp_path, job("fit", table, tmp_path / "out",
                                          checkpoint={"enabled": False}))
    assert status == 0, stderr
    assert tree_digest(mine) == kept and is_complete_output(tmp_path / "out")


def test_an_input_at_the_checkpoint_path_is_refused(tmp_path):
    data = write_zarr(tmp_path / "out.checkpoint", table_rows())
    assert_job_refused(tmp_path, job("fit", data, tmp_path / "out"),
                       "checkpoint", data)


# ------------------------------------------------------------------ (2) the ingest store


def test_a_users_store_at_the_default_ingest_path_is_refused(tmp_path, png_folder):
    mine = write_zarr(tmp_path / "out.input.zarr", np.arange(12.0).reshape(4, 3))
    assert_job_refused(tmp_path, job("segment", png_folder, tmp_path / "out"),
                       ("input.ingest_to", "output.path"), mine)


def test_a_users_store_at_ingest_to_is_refused(tmp_path, png_folder):
    mine = write_zarr(tmp_path / "mine.zarr", np.arange(12.0).reshape(4, 3))
    assert_job_refused(tmp_path, job("segment", png_folder, tmp_path / "out",
                                         input={"ingest_to": str(mine)}),
                       "input.ingest_to", mine)


def test_an_ingest_store_inside_the_image_folder_is_refused(tmp_path, png_folder):
    assert_job_refused(tmp_path, job("segment", png_folder, tmp_path / "out",
                                         input={"ingest_to": str(png_folder / "in.zarr")}),
                       "input.ingest_to", png_folder)


@pytest.mark.parametrize("ingest_to", ["out", "out.checkpoint", "out/in.zarr"])
def test_an_ingest_store_at_another_path_the_job_writes_is_refused(tmp_path, png_folder,
                                                                    ingest_to):
    write_job(tmp_path / "job.yaml", job("segment", png_folder, tmp_path / "out",
                                         input={"ingest_to": str(tmp_path / ingest_to)}))
    before = tree_digest(tmp_path)
    status, _, stderr = run_main(tmp_path / "job.yaml")
    assert_refused(status, stderr, ("input.ingest_to", "output.path", "checkpoint"),
                   tmp_path / ingest_to)
    assert_unchanged(before, tmp_path)


def test_an_image_job_runs_twice_on_its_own_ingest_store(tmp_path, png_folder):
    spec = job("segment", png_folder, tmp_path / "out")
    labels = []
    for _ in range(2):
        status, _, stderr = run(tmp_path, spec)
        assert status == 0, stderr
        labels.append(zarr.open_group(str(tmp_path / "out" / "result.zarr"), mode="r")
                      ["labels"][...])
    assert_array_equal(labels[0], labels[1])
    assert_array_equal(zarr.open_array(str(tmp_path / "out.input.zarr"), mode="r")[...],
                       images())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.yaml", "out", "out.input.zarr",
                                                          "pngs"]


# ------------------------------------------------------------------ (3) a previous output


@pytest.mark.parametrize("mine", ["src/main.py", "previews/notes.txt"])
def test_a_users_file_in_a_previous_output_is_never_replaced(tmp_path, mine):
    data = write_zarr(tmp_path / "images.zarr", images())
    spec = job("segment", data, tmp_path / "out")
    status, _, stderr = run(tmp_path, spec)
    assert status == 0, stderr
    assert (tmp_path / "out" / "previews" / "image-0000.png").is_file()
    write_user_folder(tmp_path / "out", [mine])
    before = tree_digest(tmp_path)
    status, _, stderr = run(tmp_path, spec)
    assert_refused(status, stderr, "output.path", tmp_path / "out", mine.split("/")[0])
    assert_unchanged(before, tmp_path)


# ------------------------------------------------------------------ (9) a linked output


def test_a_linked_output_leaves_nothing_beside_it(tmp_path, table):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target", target_is_directory=True)
    spec = job("fit", table, tmp_path / "link", checkpoint={"enabled": False})
    write_job(tmp_path / "job.yaml", spec)
    names = sorted(p.name for p in tmp_path.iterdir())
    status, _, stderr = run_main(tmp_path / "job.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "link").readlink() == tmp_path / "target"
    if status == 2:
        assert_refused(status, stderr, "output.path", tmp_path / "link")
        assert not any((tmp_path / "target").iterdir())
    else:
        assert status == 0, stderr
        assert is_complete_output(tmp_path / "link")


# ------------------------------------------------------------------ (11) anomaly.data


@pytest.fixture
def scored(tmp_path):
    """A second table to score: 250 rows, some far from both components."""
    rows = table_rows(250, seed=1)
    rows[:5] += 40.0
    return write_zarr(tmp_path / "scored.zarr", rows)


def test_anomaly_scores_the_rows_of_anomaly_data(tmp_path, table, scored):
    spec = job("anomaly", table, tmp_path / "out", anomaly={"data": {"path": str(scored)}})
    status, _, stderr = run(tmp_path, spec)
    assert status == 0, stderr
    result = zarr.open_group(str(tmp_path / "out" / "result.zarr"), mode="r")
    scores, flags = result["scores"][...], result["flags"][...]
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    rows = zarr.open_array(str(scored), mode="r")[...]
    assert scores.shape == (250,)
    assert_allclose(scores, model.score_samples(rows), rtol=1e-10)
    assert_array_equal(flags, scores < result.attrs["daskgmm"]["summary"]["threshold"])
    assert flags[:5].all()


def test_anomaly_with_anomaly_data_dry_runs(tmp_path, table, scored):
    write_job(tmp_path / "job.yaml", job("anomaly", table, tmp_path / "out",
                                         anomaly={"data": {"path": str(scored)}}))
    before = tree_digest(tmp_path)
    status, stdout, stderr = run_main(tmp_path / "job.yaml", "--dry-run")
    assert status == 0, stderr
    assert "anomaly.data" in stdout and str(scored) in stdout, stdout
    assert_unchanged(before, tmp_path)


# ------------------------------------------------------------------ (13) folders on the way


@pytest.mark.parametrize("below", ["out", "deeper/out"])
def test_an_output_under_a_file_is_refused(tmp_path, table, below):
    (tmp_path / "notes.txt").write_text("the user's notes\n")
    output = tmp_path / "notes.txt" / below
    assert_job_refused(tmp_path, job("fit", table, output),
                       "output.path", tmp_path / "notes.txt")


def test_a_dotdot_output_creates_no_folder_on_the_way(tmp_path, table):
    status, _, stderr = run(tmp_path, job("fit", table, f"{tmp_path}/nonexist/../out"))
    assert not (tmp_path / "nonexist").exists()
    if status == 2:
        assert_refused(status, stderr, "output.path", "nonexist/../out")
    else:
        assert status == 0, stderr
        assert is_complete_output(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["job.yaml", "out", "table.zarr"] if status == 0 else ["job.yaml", "table.zarr"])
