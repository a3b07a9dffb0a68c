"""`python -m daskgmm.run` end to end: the shipped configs, config mistakes, failures, kill/resume.

The configs run as they are, in a subprocess, with ``--set`` moving their inputs and outputs into
a temporary folder; their results are checked against the in-memory estimator.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import assert_same_model
from daskgmm import GaussianMixture
from daskgmm.atomic import STAGING_PREFIX
from daskgmm.ownership import read_marker
from daskgmm.run import main
from daskgmm.sample_data import sample_scene, sample_table
from daskgmm.checkpoint import read_fit_state
from jobs_helpers import run_runner

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def command(config, *args):
    return [sys.executable, "-m", "daskgmm.run", str(CONFIGS / config), *args]


def run(config, *args):
    """Run the runner on a shipped config to completion in a subprocess; return it finished."""
    return run_runner(CONFIGS / config, *args)


def sets(**values):
    """``--set`` arguments, with ``__`` in a name standing for the dot of a dotted key."""
    return [arg for key, value in values.items()
            for arg in ("--set", f"{key.replace('__', '.')}={value}")]


def result(path):
    return zarr.open_group(str(Path(path) / "result.zarr"), mode="r")


# ---------------------------------------------------------------- the shipped configs


@pytest.mark.slow
def test_segment_config_runs_twice_and_matches_the_estimator(tmp_path):
    args = sets(input__path=tmp_path / "scene.zarr", output__path=tmp_path / "segment")
    for _ in range(2):  # the README's first command must work twice in a row
        done = run("segment.yaml", *args)
        assert done.returncode == 0, done.stderr
    assert "iteration 1 lower bound" in done.stderr and "dashboard:" in done.stdout
    assert "run_spec" not in done.stderr, done.stderr  # no key computed as two different tasks
    out = tmp_path / "segment"
    group = result(out)
    labels, log_likelihood = group["labels"][...], group["log_likelihood"][...]
    assert labels.shape == (1, 256, 256) and labels.dtype == np.uint8
    assert log_likelihood.dtype == np.float32
    model = GaussianMixture.load(out / "model.zarr")
    pixels = sample_scene().reshape(-1, 3)
    assert_array_equal(labels.reshape(-1), model.predict(pixels))
    np.testing.assert_allclose(log_likelihood.reshape(-1), model.score_samples(pixels), rtol=1e-5)
    record = group.attrs["daskgmm"]
    assert record["complete"] and record["version"] and record["pipeline"] == "segment"
    assert record["config"]["output"]["path"] == str(out)
    assert record["inputs"]["input"]["shape"] == [256, 256, 3]
    assert record["inputs"]["input"]["chunks"] == [[256], [256], [3]]
    assert (out / "previews" / "image-0000.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.zarr", "segment"]


@pytest.mark.slow
def test_select_config_writes_table_plot_and_best_model(tmp_path):
    out = tmp_path / "select"
    done = run("select.yaml", *sets(input__path=tmp_path / "t.zarr", output__path=out,
                                    select__n_components="[1, 2, 3]",
                                    select__covariance_types="[full, spherical]"))
    assert done.returncode == 0, done.stderr
    table = json.loads((out / "scores.json").read_text())
    assert [(r["n_components"], r["covariance_type"]) for r in table] == [
        (1, "full"), (2, "full"), (3, "full"), (1, "spherical"), (2, "spherical"),
        (3, "spherical")]
    assert len((out / "scores.csv").read_text().splitlines()) == 7
    best = min(table, key=lambda r: r["bic"])
    model = GaussianMixture.load(out / "model.zarr")
    assert (model.n_components, model.covariance_type) == (best["n_components"],
                                                           best["covariance_type"])
    assert model.bic(sample_table()) == pytest.approx(best["bic"])
    assert (out / "criterion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result(out).attrs["daskgmm"]["summary"]["best"]["n_components"] == model.n_components


@pytest.mark.slow
def test_anomaly_config_flags_the_unlikely_rows(tmp_path):
    out = tmp_path / "anomaly"
    done = run("anomaly.yaml", *sets(input__path=tmp_path / "t.zarr", output__path=out))
    assert done.returncode == 0, done.stderr
    group = result(out)
    scores, flags = group["scores"][...], group["flags"][...]
    table = sample_table()
    model = GaussianMixture.load(out / "model.zarr")
    np.testing.assert_allclose(scores, model.score_samples(table), rtol=1e-10)
    threshold = group.attrs["daskgmm"]["summary"]["threshold"]
    assert threshold == pytest.approx(np.quantile(model.score_samples(table), 0.01))
    assert_array_equal(flags, scores < threshold)
    assert flags.dtype == bool and 0.005 < flags.mean() < 0.02


@pytest.mark.slow
def test_fit_then_predict_configs_apply_the_saved_model(tmp_path):
    table = tmp_path / "t.zarr"
    done = run("fit.yaml", *sets(input__path=table, output__path=tmp_path / "fit"))
    assert done.returncode == 0, done.stderr
    done = run("predict.yaml", *sets(input__path=table, output__path=tmp_path / "predict",
                                     model__load=tmp_path / "fit" / "model.zarr"))
    assert done.returncode == 0, done.stderr
    model = GaussianMixture.load(tmp_path / "fit" / "model.zarr")
    for name in ("fit", "predict"):
        group = result(tmp_path / name)
        assert_array_equal(group["labels"][...], model.predict(sample_table()))
        assert group["probabilities"].shape == (6060, 3)
        assert group["probabilities"].dtype == np.float32


def test_dry_run_prints_the_plan_and_does_nothing(tmp_path, capsys):
    status = main([str(CONFIGS / "segment.yaml"), "--dry-run",
                   *sets(input__path=tmp_path / "scene.zarr", output__path=tmp_path / "out")])
    printed = capsys.readouterr().out
    assert status == 0
    for words in ("job: segment", "shape (256, 256, 3) uint8", "result.zarr/labels (1, 256, 256)",
                  "cluster: local", "checkpoint:"):
        assert words in printed
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- config mistakes: exit 2


@pytest.mark.slow
def test_unknown_key_exits_2_from_the_real_process(tmp_path):
    done = run("segment.yaml", *sets(model__n_componets=3, output__path=tmp_path / "out"))
    assert done.returncode == 2
    assert "segment.yaml: model.n_componets: unknown key; did you mean 'n_components'?" in \
        done.stderr
    assert "Traceback" not in done.stderr and list(tmp_path.iterdir()) == []


def write_job(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def table_store(tmp_path_factory):
    from conftest import write_zarr

    path = tmp_path_factory.mktemp("data") / "table.zarr"
    write_zarr(path, sample_table())
    return path


@pytest.mark.parametrize("overrides, key", [
    ({"model__n_components": "three"}, "model.n_components"),          # wrong type
    ({"model__tol": "-1"}, "model.tol"),                                # out of range
    ({"model__covariance_type": "ful"}, "model.covariance_type"),       # not a choice
    ({"input__path": "MISSING.zarr", "input__generate": "null"}, "input.path"),  # no store
    ({"input__array": "X"}, "input.array"),                             # missing array
    ({"model__load": "MISSING.zarr"}, "model.load"),                    # missing model
    ({"cluster__kind": "slurmm"}, "cluster.kind"),                      # unknown kind
])
def test_config_mistake_exits_2_naming_the_key(tmp_path, capsys, table_store, overrides, key):
    overrides = {name: str(value).replace("MISSING", str(tmp_path / "nothing"))
                 for name, value in overrides.items()}
    status = main([str(CONFIGS / "fit.yaml"), *sets(input__path=table_store,
                                                    output__path=tmp_path / "out"),
                   *sets(**overrides)])
    message = capsys.readouterr().err
    assert status == 2
    assert f"fit.yaml: {key}: " in message
    assert not (tmp_path / "out").exists()


def test_missing_required_key_exits_2(tmp_path, capsys):
    job = write_job(tmp_path, "pipeline: fit\ninput: {path: x.zarr}\nmodel: {n_components: 2}\n")
    assert main([str(job)]) == 2
    assert f"{job}: output: missing required key" in capsys.readouterr().err


def test_existing_output_without_overwrite_exits_2(tmp_path, capsys, table_store):
    (tmp_path / "out").mkdir()
    status = main([str(CONFIGS / "fit.yaml"), *sets(input__path=table_store,
                                                    output__path=tmp_path / "out",
                                                    output__overwrite="false")])
    assert status == 2
    assert "fit.yaml: output.path: " in capsys.readouterr().err


def test_a_folder_that_is_no_job_output_is_never_replaced(tmp_path, capsys, table_store):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not daskgmm's")
    status = main([str(CONFIGS / "fit.yaml"), *sets(input__path=table_store,
                                                    output__path=precious,
                                                    output__overwrite="true")])
    assert status == 2
    assert "output.path: " in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["holiday.jpg"]


@pytest.mark.parametrize("output", ["table.zarr", ".", "table.zarr/inside"])
def test_output_overlapping_the_input_exits_2(tmp_path, capsys, table_store, output):
    status = main([str(CONFIGS / "fit.yaml"), *sets(input__path=table_store,
                                                    output__path=table_store.parent / output,
                                                    output__overwrite="true")])
    assert status == 2
    assert "overlaps input.path" in capsys.readouterr().err
    assert (table_store / "zarr.json").exists()


def test_runtime_failure_exits_1_with_one_paragraph(tmp_path, capsys, table_store):
    status = main([str(CONFIGS / "fit.yaml"), *sets(input__path=table_store,
                                                    output__path=tmp_path / "out",
                                                    model__n_components=7000)])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 1
    assert message.startswith("daskgmm.run: the fit job")
    assert "n_samples >= n_components" in message and "--verbose" in message
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- kill and resume


def start_and_kill(args, after_iteration, until=None):
    """Start the runner, SIGKILL it once it reports ``after_iteration``; return its stderr.

    ``until(process)``, when given, is called after that report and delays the kill until it
    returns.
    """
    process = subprocess.Popen(command("fit.yaml", *args), cwd=REPO, stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if f" iteration {after_iteration} lower bound" in line:
                if until is not None:
                    until(process)
                os.killpg(process.pid, signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def writing_started(output):
    """An ``until`` for :func:`start_and_kill`: wait until the job stages ``output``."""
    def until(process):
        while not staging_of(output):
            assert process.poll() is None, "the job ended before the kill"
    return until


MAX_ITER = 30


def staging_of(output):
    """The staging folders of ``output`` beside it."""
    return [folder for folder in output.parent.glob(f"{STAGING_PREFIX}*")
            if (read_marker(folder) or {}).get("target") == output.name]


def resumable(table_store):
    """``--set`` arguments of a fit job of exactly ``MAX_ITER`` checkpointed iterations."""
    return sets(input__path=table_store, model__tol=0, model__max_iter=MAX_ITER,
                training__sample=3000, output__probabilities="false")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, table_store):
    """The output of the kill-and-resume job, run without interruption."""
    out = tmp_path_factory.mktemp("reference") / "out"
    done = run("fit.yaml", *resumable(table_store), *sets(output__path=out))
    assert done.returncode == 0, done.stderr
    return out


def checkpoint_state(path):
    return read_fit_state(path)[0]


def assert_only_staging_left(folder, *names):
    """``folder`` holds ``names`` and, beside them, only hidden unfinished staging folders."""
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == list(names)
    assert all(p.name.startswith(STAGING_PREFIX) for p in folder.iterdir()
               if p.name.startswith("."))


def assert_same_output(out, reference):
    assert_same_model(GaussianMixture.load(out / "model.zarr"),
                      GaussianMixture.load(reference / "model.zarr"))
    assert_array_equal(result(out)["labels"][...], result(reference)["labels"][...])
    assert result(out).attrs["daskgmm"]["complete"]


@pytest.mark.slow
def test_killed_job_leaves_nothing_complete_and_resume_matches(tmp_path, table_store, reference):
    out = tmp_path / "out"
    start_and_kill(resumable(table_store) + sets(output__path=out), after_iteration=5)
    assert not out.exists()
    assert_only_staging_left(tmp_path, "out.checkpoint")
    assert 5 <= checkpoint_state(tmp_path / "out.checkpoint").current.n_iter < MAX_ITER

    done = run("fit.yaml", *resumable(table_store), *sets(output__path=out), "--resume")
    assert done.returncode == 0, done.stderr
    assert "iteration 1 lower bound" not in done.stderr
    assert f"iteration {MAX_ITER} " in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no checkpoint, no staging
    assert_same_output(out, reference)

    # A killed run that would replace a complete output leaves that output as it was.
    start_and_kill(resumable(table_store) + sets(output__path=out), after_iteration=3)
    assert_same_output(out, reference)


@pytest.mark.slow
def test_job_killed_while_writing_leaves_nothing_complete_and_resume_matches(
        tmp_path, table_store, reference):
    out = tmp_path / "out"
    start_and_kill(resumable(table_store) + sets(output__path=out), after_iteration=MAX_ITER,
                   until=writing_started(out))
    assert not out.exists() and staging_of(out)  # killed mid-write
    assert_only_staging_left(tmp_path, "out.checkpoint")
    assert checkpoint_state(tmp_path / "out.checkpoint").init == 1  # the fit was done

    done = run("fit.yaml", *resumable(table_store), *sets(output__path=out), "--resume")
    assert done.returncode == 0, done.stderr
    assert " iteration " not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert_same_output(out, reference)
