"""model.update: online: every run of a batch segment job continues the store's current model.

Real PNG files, a real in-process LocalCluster, and real runner processes for two runs started
together. The manifest's lineage (``current_model``, each version's ``parent`` and inputs) ties
every result to the model that labelled it; the update is one partial_fit step, to the bit.
"""

import json

import numpy as np
import pytest

from batch_helpers import add_images, job, manifest, run_batch, runs, write_job_file
from daskgmm import GaussianMixture
from daskgmm.config import ConfigError, JobConfig
from daskgmm.pipelines import segment
from jobs_helpers import finish_runner, start_runner

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ONLINE = {"update": "online"}


def lineage(tmp_path):
    """The store's model versions from the current one back to the first."""
    models, version, line = manifest(tmp_path)["models"], manifest(tmp_path)["current_model"], []
    while version is not None:
        line.append(version)
        version = models[version]["parent"]
    return line[::-1]


def model_at(tmp_path, version):
    return GaussianMixture.load(tmp_path / "store" / "models" / f"{version}.zarr")


def test_three_online_runs_give_one_lineage_and_label_every_image_once(client, tmp_path):
    folder = tmp_path / "images"
    batches = [("a.png", "b.png"), ("c.png",), ("d.png", "e.png")]
    summaries = []
    for names in batches:
        add_images(folder, *names)
        summaries.append(run_batch(job(tmp_path, model=ONLINE)))
    line = lineage(tmp_path)
    models, entries = manifest(tmp_path)["models"], manifest(tmp_path)["inputs"]
    assert len(line) == 3 and sorted(models) == sorted(line)  # one line, no branch
    assert [summary["model"] for summary in summaries] == line
    assert models[line[0]]["fitted_on"] == ["a.png", "b.png"]
    assert [models[v]["updated_with"] for v in line[1:]] == [["c.png"], ["d.png", "e.png"]]
    assert [models[v]["online_steps"] for v in line] == [0, 1, 2]
    # Every image labelled once, by the version its run made, which its result names too.
    assert [name for record in runs(tmp_path) for name in record["processed"]] == [
        "a.png", "b.png", "c.png", "d.png", "e.png"]
    for version, names in zip(line, batches):
        for name in names:
            assert entries[name]["model"] == version
            attrs = json.loads((tmp_path / "store" / "results" / name / "result.zarr" /
                                "zarr.json").read_text())["attributes"]["daskgmm"]
            assert attrs["summary"]["model_version"] == version


def test_an_update_is_one_partial_fit_step_of_the_model_before_it(client, tmp_path):
    folder = tmp_path / "images"
    add_images(folder, "a.png", "b.png")
    run_batch(job(tmp_path, model=ONLINE, training={"sample": None}))
    add_images(folder, "c.png")
    run_batch(job(tmp_path, model=ONLINE, training={"sample": None}))
    first, second = lineage(tmp_path)
    expected = model_at(tmp_path, first)
    pixels = np.asarray(add_images(tmp_path / "again", "c.png")["c.png"], dtype=np.float64)
    expected.partial_fit(pixels.reshape(-1, 3))
    updated = model_at(tmp_path, second)
    assert not np.allclose(updated.means_, model_at(tmp_path, first).means_)  # it moved
    for name in ("weights_", "means_", "covariances_"):  # float32 pixels in the job
        np.testing.assert_allclose(getattr(updated, name), getattr(expected, name),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert updated.online_steps_ == 1
    np.testing.assert_allclose(updated.online_statistics_.counts,
                               expected.online_statistics_.counts, rtol=1e-5)


def test_two_online_runs_started_together_still_give_one_lineage(tmp_path):
    names = [f"{letter}.png" for letter in "abcd"]
    add_images(tmp_path / "images", *names)
    job_file = write_job_file(tmp_path, job(tmp_path, model=ONLINE, batch={"max_inputs": 2}))
    results = [finish_runner(process) for process in [start_runner(job_file),
                                                      start_runner(job_file)]]
    assert [done.returncode for done in results] == [0, 0], [done.stderr[-3000:]
                                                             for done in results]
    line = lineage(tmp_path)
    assert len(line) == 2 and sorted(manifest(tmp_path)["models"]) == sorted(line)
    entries = manifest(tmp_path)["inputs"]
    assert sorted(entries) == names and {entries[name]["model"] for name in names} == set(line)


@pytest.mark.parametrize("changes, key", [
    ({"batch": None}, "model.update"),
    ({"model": {"kind": "bayesian"}}, "model.update"),
])
def test_online_updates_need_a_gaussian_batch_job(tmp_path, changes, key):
    data = job(tmp_path, model=ONLINE)
    for name, value in changes.items():
        data[name] = None if value is None else {**data[name], **value}
    if data["batch"] is None:
        del data["batch"]
    with pytest.raises(ConfigError, match="update"):
        JobConfig.from_dict(data)


def test_the_shipped_online_batch_config_runs_twice_into_one_lineage(client, tmp_path):
    from pathlib import Path

    from daskgmm.config import load_config

    shipped = Path(__file__).resolve().parents[1] / "configs" / "segment-batch-online.yaml"
    overrides = [f"input.path={tmp_path / 'images'}", f"output.path={tmp_path / 'store'}"]
    first = segment.run(segment.prepare(load_config(shipped, overrides)))  # sample scenes
    add_images(tmp_path / "images", "new.png", size=48)
    second = segment.run(segment.prepare(load_config(shipped, overrides)))
    assert second["processed"] == "1 input(s): new.png"
    assert lineage(tmp_path) == [first["model"], second["model"]]
    assert manifest(tmp_path)["models"][second["model"]]["updated_with"] == ["new.png"]
