"""The job pipelines in-process: fitting by steps, resuming, segmenting, tables, reuse, pictures."""

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal

from conftest import assert_same_model, make_blobs, write_zarr
from daskgmm import GaussianMixture, store
from daskgmm.config import ConfigError, JobConfig, ModelConfig
from daskgmm.pipelines import anomaly, render, segment, select, training
from daskgmm.pipelines import fit as fit_pipeline
from jobs_helpers import Crash, CrashingCheckpoint, run_pipeline

Checkpoint, Standardizer = training.Checkpoint, training.Standardizer
fit_mixture, sample_rows = training.fit_mixture, training.sample_rows
colour_labels, component_colours = render.colour_labels, render.component_colours
line_plot = render.line_plot

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def read_result(path, name):
    return zarr.open_group(str(path / "result.zarr"), mode="r")[name][...]


def scene(n=2, size=32, seed=0):
    """``n`` float images with three flat colours plus noise, shape (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None] * np.ones(size)
    regions = (rows > size // 3).astype(int) + (rows > 2 * size // 3)
    colours = np.array([[200.0, 30, 30], [30, 200, 30], [30, 30, 200]])
    images = colours[regions][None] + rng.normal(scale=5.0, size=(n, size, size, 3))
    return images.astype(np.float32)


# ---------------------------------------------------------------- fitting, checkpointed


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_a_checkpointed_fit_is_the_estimators_model(client, tmp_path, covariance_type, dtype):
    X = da.from_array(make_blobs(n_samples=900).astype(dtype), chunks=100)
    config = ModelConfig(n_components=3, covariance_type=covariance_type, tol=1e-6, n_init=2,
                         split_every=2)
    stepped = fit_mixture(X, config, Checkpoint(str(tmp_path / "c"), 1, "x"))
    plain = GaussianMixture(3, covariance_type=covariance_type, tol=1e-6, random_state=0,
                            n_init=2, split_every=2).fit(X)
    assert_same_model(stepped, plain)
    assert stepped.converged_
    assert stepped.get_params() == plain.get_params()


@pytest.mark.slow
@pytest.mark.parametrize("crash_after", [3, 9])
def test_resume_ends_at_the_uninterrupted_model(client, tmp_path, crash_after):
    X = da.from_array(make_blobs(n_samples=600, seed=3), chunks=200)
    config = ModelConfig(n_components=3, tol=0.0, max_iter=6, n_init=2)
    whole = fit_mixture(X, config, Checkpoint(str(tmp_path / "a"), 1, "job"))
    crashing = CrashingCheckpoint(Checkpoint(str(tmp_path / "b"), 1, "job"), crash_after)
    with pytest.raises(Crash):
        fit_mixture(X, config, crashing)
    state = Checkpoint(str(tmp_path / "b"), 1, "job").load()
    resumed = fit_mixture(X, config, Checkpoint(str(tmp_path / "b"), 1, "job"), state)
    assert_same_model(resumed, whole)


def test_checkpoint_of_another_job_is_refused(tmp_path):
    model = GaussianMixture(2).fit(make_blobs(n_samples=50, n_components=2))
    Checkpoint(str(tmp_path / "c"), 1, "job-a").save({"best": model}, {"rows": []})
    with pytest.raises(ConfigError) as info:
        Checkpoint(str(tmp_path / "c"), 1, "job-b").load()
    assert info.value.key == "checkpoint"


def test_sample_is_the_same_every_time_and_only_valid_rows(client):
    rows = da.arange(20000 * 2, chunks=4000).reshape(20000, 2)
    valid = (rows[:, 0] % 4) != 0
    first = sample_rows(rows, valid, 3000, 7).compute()
    again = sample_rows(rows, valid, 3000, 7).compute()
    assert_array_equal(first, again)
    assert 2500 < len(first) < 3500
    assert np.all(first[:, 0] % 4 != 0)
    assert sample_rows(rows, None, None, 7) is rows
    assert sample_rows(rows, None, 50000, 7) is rows
    assert_array_equal(sample_rows(rows, valid, None, 7).compute(), rows.compute()[
        rows[:, 0].compute() % 4 != 0])


def test_standardizer_round_trips_through_attrs():
    rows = da.from_array(np.array([[1.0, 5.0], [3.0, 5.0]]))
    scaler = Standardizer.fit(rows, da.compute)
    assert_array_equal(scaler.scale, [1.0, 1.0])  # a constant column keeps scale 1
    again = Standardizer.from_attrs(json.loads(json.dumps(scaler.to_attrs())))
    assert_array_equal(again.transform(np.array([[2.0, 5.0]])), [[0.0, 0.0]])
    assert_array_equal(again.inverse([[0.0, 0.0]]), [[2.0, 5.0]])


# ---------------------------------------------------------------- segment


def segment_job(tmp_path, **sections):
    job = {"pipeline": "segment", "input": {"path": str(tmp_path / "images.zarr")},
           "model": {"n_components": 3},
           "training": {"sample": 1500},
           "output": {"path": str(tmp_path / "out"), "probabilities": True,
                      "log_likelihood": True}}
    for name, values in sections.items():
        job[name] = {**job.get(name, {}), **values}
    return job


def test_segment_labels_every_pixel_and_leaves_out_no_data(client, tmp_path):
    images = scene()
    images[0, :4, :4] = -1.0  # a no-data corner
    images[1, 5, 5, 1] = np.nan
    mask = np.ones((32, 32), dtype=bool)
    mask[-3:, -3:] = False
    write_zarr(tmp_path / "images.zarr", da.from_array(images, chunks=(1, 16, 32, 3)))
    write_zarr(tmp_path / "mask.zarr", mask)
    prepared = run_pipeline(segment_job(tmp_path, input={"nodata": -1.0,
                                                         "mask": str(tmp_path / "mask.zarr")}))
    out = tmp_path / "out"
    labels = read_result(out, "labels")
    assert labels.shape == (2, 32, 32) and labels.dtype == np.uint8
    no_data = (images == -1).any(-1) | np.isnan(images).any(-1) | ~mask
    assert np.all(labels[no_data] == 255) and np.all(labels[~no_data] < 3)
    model = GaussianMixture.load(out / "model.zarr")
    assert_array_equal(labels[~no_data], model.predict(images[~no_data]))
    probabilities = read_result(out, "probabilities")
    assert probabilities.shape == (2, 32, 32, 3) and probabilities.dtype == np.float32
    assert np.isnan(probabilities[no_data]).all()
    log_likelihood = read_result(out, "log_likelihood")
    np.testing.assert_allclose(log_likelihood[~no_data], model.score_samples(images[~no_data]),
                               rtol=1e-5)
    assert (out / "previews" / "image-0001.png").exists()
    # Checkpointed while fitting (the default), and the checkpoint removed once done.
    assert prepared.checkpoint.enabled
    assert Path(prepared.checkpoint.path) == tmp_path / "out.checkpoint"
    assert not (tmp_path / "out.checkpoint").exists()


def test_segment_reads_channels_first_and_standardizes(client, tmp_path):
    images = scene(n=1)[0]
    write_zarr(tmp_path / "images.zarr", np.moveaxis(images, -1, 0))  # (C, H, W)
    run_pipeline(segment_job(tmp_path, input={"channel_axis": 0},
                             training={"standardize": True, "sample": None}))
    out = tmp_path / "out"
    labels = read_result(out, "labels")
    assert labels.shape == (1, 32, 32)
    model = GaussianMixture.load(out / "model.zarr")
    scaler = Standardizer.from_attrs(store.read_attrs(out / "model.zarr")["preprocessing"])
    assert_array_equal(labels[0], model.predict(scaler.transform(images.reshape(-1, 3)))
                       .reshape(32, 32))


def test_segment_ingests_image_files_once_and_applies_a_saved_model(client, tmp_path):
    from PIL import Image

    folder = tmp_path / "pictures"
    folder.mkdir()
    images = np.clip(scene(n=2), 0, 255).astype(np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"p{i}.png")
    job = segment_job(tmp_path, input={"path": str(folder)})
    run_pipeline(job)
    ingested = tmp_path / "out.input.zarr"
    assert_array_equal(store.open_array(ingested).compute(), images)
    stamp = (ingested / "zarr.json").stat().st_mtime_ns
    reuse = segment_job(tmp_path, input={"path": str(folder)},
                        model={"load": str(tmp_path / "out" / "model.zarr"),
                               "n_components": None},
                        output={"path": str(tmp_path / "again")})
    run_pipeline(reuse)
    assert (ingested / "zarr.json").stat().st_mtime_ns == stamp
    assert_array_equal(read_result(tmp_path / "again", "labels"),
                       read_result(tmp_path / "out", "labels"))


@pytest.mark.parametrize("changes, key", [
    ({"input": {"channel_axis": 4}}, "input.channel_axis"),
    ({"input": {"mask": "MASK"}}, "input.mask"),
    ({"input": {"array": "nope"}}, "input.array"),
    ({"output": {"preview_bands": [0, 1, 7]}}, "output.preview_bands"),
])
def test_segment_mistakes_found_before_work(tmp_path, changes, key):
    write_zarr(tmp_path / "images.zarr", scene(n=1))
    write_zarr(tmp_path / "mask.zarr", np.ones((5, 5), dtype=bool))
    changes = json.loads(json.dumps(changes).replace("MASK", str(tmp_path / "mask.zarr")))
    with pytest.raises(ConfigError) as info:
        segment.prepare(JobConfig.from_dict(segment_job(tmp_path, **changes)))
    assert info.value.key == key


# ---------------------------------------------------------------- tables


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_fit_reads_chosen_columns_of_table_files(client, tmp_path, file_format):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("dask.dataframe")
    X = make_blobs(n_samples=400, n_features=2)
    frame = pd.DataFrame({"x": X[:, 0], "name": [f"row{i}" for i in range(400)], "y": X[:, 1]})
    for part in range(2):
        rows = frame.iloc[200 * part: 200 * (part + 1)]
        if file_format == "csv":
            rows.to_csv(tmp_path / f"part{part}.csv", index=False, float_format="%.17g")
        else:
            rows.to_parquet(tmp_path / f"part{part}.parquet")
    run_pipeline({"pipeline": "fit", "input": {"path": str(tmp_path / f"part*.{file_format}"),
                                               "columns": ["x", "y"]},
                  "model": {"n_components": 3}, "output": {"path": str(tmp_path / "out")}})
    labels = read_result(tmp_path / "out", "labels")
    model = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    assert labels.shape == (400,) and labels.dtype == np.uint8
    assert_array_equal(labels, model.predict(X))


NON_FINITE = (5, 17, 300)  # rows given a NaN, an inf and a -inf


def table_with_non_finite_rows(tmp_path):
    X = make_blobs(n_samples=600)
    X[NON_FINITE[0], 1], X[NON_FINITE[1], 0], X[NON_FINITE[2], 2] = np.nan, np.inf, -np.inf
    write_zarr(tmp_path / "rows.zarr", da.from_array(X, chunks=200))
    return X


@pytest.mark.parametrize("loaded", [False, True], ids=["fit", "predict"])
def test_non_finite_rows_are_no_data_in_fit_and_predict(client, tmp_path, loaded):
    X = table_with_non_finite_rows(tmp_path)
    finite = np.isfinite(X).all(axis=1)
    model = {"n_components": 3, "random_state": 0}
    if loaded:
        GaussianMixture(3, random_state=0).fit(X[finite]).save(tmp_path / "saved.zarr")
        model = {"load": str(tmp_path / "saved.zarr")}
    job = {"pipeline": "predict" if loaded else "fit",
           "input": {"path": str(tmp_path / "rows.zarr")}, "model": model,
           "output": {"path": str(tmp_path / "out"), "probabilities": True,
                      "log_likelihood": True}}
    config = JobConfig.from_dict(job)
    summary = fit_pipeline.run(fit_pipeline.prepare(config))
    assert summary["non_finite_rows"] == len(NON_FINITE)
    labels = read_result(tmp_path / "out", "labels")
    assert np.all(labels[~finite] == np.iinfo(labels.dtype).max)
    fitted = GaussianMixture.load(tmp_path / "out" / "model.zarr")
    assert_array_equal(labels[finite], fitted.predict(X[finite]))
    assert np.isnan(read_result(tmp_path / "out", "log_likelihood")[~finite]).all()
    assert np.isnan(read_result(tmp_path / "out", "probabilities")[~finite]).all()
    if not loaded:  # fitted on the finite rows alone (components in any order)
        reference = GaussianMixture(3, random_state=0).fit(X[finite])
        order = np.argsort(fitted.means_[:, 0]), np.argsort(reference.means_[:, 0])
        np.testing.assert_allclose(fitted.means_[order[0]], reference.means_[order[1]],
                                   rtol=1e-3)


def test_non_finite_rows_are_never_flagged_by_anomaly(client, tmp_path):
    X = table_with_non_finite_rows(tmp_path)
    finite = np.isfinite(X).all(axis=1)
    job = {"pipeline": "anomaly", "input": {"path": str(tmp_path / "rows.zarr")},
           "model": {"n_components": 3}, "anomaly": {"quantile": 0.05},
           "output": {"path": str(tmp_path / "out")}}
    summary = anomaly.run(anomaly.prepare(JobConfig.from_dict(job)))
    assert summary["non_finite_rows"] == len(NON_FINITE)
    scores, flags = read_result(tmp_path / "out", "scores"), read_result(tmp_path / "out", "flags")
    assert np.isnan(scores[~finite]).all() and np.isfinite(scores[finite]).all()
    assert not flags[~finite].any() and flags[finite].sum() == summary["flagged"] > 0


def test_csv_column_mistakes_name_the_key(tmp_path):
    pytest.importorskip("dask.dataframe")
    (tmp_path / "t.csv").write_text("x,name\n1.0,a\n2.0,b\n")
    for columns in (["z"], ["name"]):
        config = JobConfig.from_dict({"pipeline": "fit", "model": {"n_components": 1},
                                      "input": {"path": str(tmp_path / "t.csv"),
                                                "columns": columns},
                                      "output": {"path": str(tmp_path / "out")}})
        with pytest.raises(ConfigError) as info:
            fit_pipeline.prepare(config)
        assert info.value.key == "input.columns"


def test_select_resumes_after_the_models_already_fitted(client, tmp_path):
    write_zarr(tmp_path / "t.zarr", make_blobs(n_samples=300, n_features=2))
    job = {"pipeline": "select", "input": {"path": str(tmp_path / "t.zarr")},
           "select": {"n_components": [1, 2, 3], "covariance_types": ["full", "diag"]},
           "output": {"path": str(tmp_path / "whole")}}
    select.run(select.prepare(JobConfig.from_dict(job)))
    job["output"]["path"] = str(tmp_path / "resumed")
    prepared = select.prepare(JobConfig.from_dict(job))
    prepared.checkpoint = CrashingCheckpoint(prepared.checkpoint, 4)
    with pytest.raises(Crash):
        select.run(prepared)
    resumed = select.prepare(JobConfig.from_dict(job), resume=True)
    assert "4 model(s) already fitted" in resumed.plan.steps[1]
    select.run(resumed)
    tables = [json.loads((tmp_path / name / "scores.json").read_text())
              for name in ("whole", "resumed")]
    assert tables[0] == tables[1] and len(tables[0]) == 6
    assert (tmp_path / "resumed" / "criterion.png").exists()
    assert_same_model(GaussianMixture.load(tmp_path / "resumed" / "model.zarr"),
                      GaussianMixture.load(tmp_path / "whole" / "model.zarr"))


# ---------------------------------------------------------------- pictures


def test_component_colours_and_label_painting():
    means = np.array([[250.0, 0.0, 0.0], [0.0, 0.0, 250.0]])
    assert_array_equal(component_colours(means, np.uint8), [[250, 0, 0], [0, 0, 250]])
    stretched = component_colours(means * 10, np.float32)
    assert stretched.max() == 255 and stretched.min() == 0
    grey = component_colours(means, np.uint16, channels=[2])
    assert_array_equal(grey[:, 0], grey[:, 1])
    picture = colour_labels(np.array([[0, 1], [255, 1]], dtype=np.uint8), means.astype(np.uint8))
    assert_array_equal(picture[1, 0], [0, 0, 0])
    assert_array_equal(picture[0, 0], [250, 0, 0])


def test_line_plot_draws_every_series():
    canvas = line_plot({"full": ([1, 2, 3], [10.0, 5.0, 6.0]), "diag": ([1, 2, 3], [9, 7, 8])},
                       "K", "BIC", "title", highlight=(2, 5.0))
    assert canvas.shape == (420, 640, 3) and canvas.dtype == np.uint8
    for colour in ([31, 119, 180], [255, 127, 14]):
        assert (canvas == colour).all(axis=-1).sum() > 50
