"""The job schema: typed sections, dotted-path errors, round trips and --set overrides."""

import dataclasses
from pathlib import Path

import pytest

from daskgmm import schema
from daskgmm.cluster import check_cluster, describe_cluster
from daskgmm.config import (
    ClusterConfig,
    ConfigError,
    JobConfig,
    ModelConfig,
    apply_override,
    load_config,
)
from daskgmm.model_config import PRIORS
from daskgmm.options import BAYESIAN_MIXTURE_PARAMETERS, GAUSSIAN_MIXTURE_PARAMETERS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def minimal(**sections):
    job = {"pipeline": "fit", "input": {"path": "data.zarr"}, "output": {"path": "out/x"},
           "model": {"n_components": 3}}
    job.update(sections)
    return job


def error_of(data):
    with pytest.raises(ConfigError) as info:
        JobConfig.from_dict(data)
    return info.value


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_example_configs_load_and_round_trip(name):
    config = load_config(CONFIGS / name)
    full = config.to_dict()
    assert JobConfig.from_dict(full).to_dict() == full
    assert config.pipeline == name.removesuffix(".yaml").split("-")[0]  # segment-batch: segment


def test_round_trip_of_every_section():
    data = minimal(
        pipeline="anomaly",
        input={"path": "a.csv", "array": None, "format": "csv", "columns": ["x", "y"],
               "channel_axis": -1, "nodata": 0.0, "mask": None, "generate": None,
               "ingest_to": None},
        anomaly={"quantile": None, "threshold": -3.5,
                 "data": {"path": "b.csv", "array": None, "format": "auto", "columns": None,
                          "channel_axis": 0, "nodata": None, "mask": "m.zarr",
                          "generate": None, "ingest_to": "i.zarr"}},
    )
    full = JobConfig.from_dict(data).to_dict()
    assert JobConfig.from_dict(full).to_dict() == full
    assert full["anomaly"]["data"]["mask"] == "m.zarr"
    assert full["cluster"]["kind"] == "local"


def test_config_error_is_a_value_error_with_key_and_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("pipeline: fit\ninput: {path: x.zarr}\noutput: {path: o}\n"
                    "model: {n_components: 0}\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.key == "model.n_components" and error.file == str(path)
    assert str(error).startswith(f"{path}: model.n_components: must be >= 1")


def test_unknown_key_suggests_the_closest():
    error = error_of(minimal(model={"n_componets": 3}))
    assert error.key == "model.n_componets"
    assert "did you mean 'n_components'?" in str(error)


def test_unknown_top_level_section_suggests_the_closest():
    error = error_of(minimal(clustr={}))
    assert error.key == "clustr" and "did you mean 'cluster'?" in str(error)


@pytest.mark.parametrize("section, value, key", [
    ("model", {"n_components": "three"}, "model.n_components"),
    ("model", {"n_components": 3, "tol": [1]}, "model.tol"),
    ("output", {"path": "o", "overwrite": "yes"}, "output.overwrite"),
    ("input", {"path": "x", "columns": "x"}, "input.columns"),
    ("input", {"path": "x", "columns": ["x", 2]}, "input.columns[1]"),
    ("cluster", {"n_workers": 1.5}, "cluster.n_workers"),
])
def test_wrong_type_names_the_key(section, value, key):
    error = error_of(minimal(**{section: value}))
    assert error.key == key and "expected" in error.message


@pytest.mark.parametrize("section, value, key", [
    ("model", {"n_components": 3, "tol": -1.0}, "model.tol"),
    ("model", {"n_components": 3, "covariance_type": "ful"}, "model.covariance_type"),
    ("training", {"sample": 0}, "training.sample"),
    ("checkpoint", {"every": 0}, "checkpoint.every"),
    ("cluster", {"timeout": 0}, "cluster.timeout"),
    ("model", {"n_components": 3, "reg_covar": float("inf")}, "model.reg_covar"),
    ("model", {"n_components": 3, "tol": "nan"}, "model.tol"),
    ("model", {"n_components": 3, "random_state": 2**32}, "model.random_state"),
])
def test_value_out_of_range_names_the_key(section, value, key):
    assert error_of(minimal(**{section: value})).key == key


def test_choice_mistake_suggests_the_closest():
    error = error_of(minimal(model={"n_components": 3, "covariance_type": "ful"}))
    assert "did you mean 'full'?" in str(error)


def test_quantile_range_is_open_at_zero():
    data = minimal(pipeline="anomaly", anomaly={"quantile": 0.0})
    assert error_of(data).key == "anomaly.quantile"


@pytest.mark.parametrize("drop, key", [("pipeline", "pipeline"), ("output", "output"),
                                       ("model", "model.n_components")])
def test_missing_required_key(drop, key):
    data = minimal()
    del data[drop]
    error = error_of(data)
    assert error.key == key and "missing required key" in error.message


def test_missing_required_nested_key():
    assert error_of(minimal(input={"format": "zarr"})).key == "input.path"


@pytest.mark.parametrize("changes, key", [
    ({"pipeline": "select"}, "model.n_components"),
    ({"pipeline": "predict"}, "model.load"),
    ({"pipeline": "anomaly"}, "anomaly"),
    ({"select": {"n_components": [2, 3]}}, "select"),
    ({"pipeline": "anomaly", "anomaly": {"quantile": 0.1, "threshold": -2.0}},
     "anomaly.quantile"),
    ({"pipeline": "select", "model": {}, "select": {"n_components": [2, 2]}},
     "select.n_components"),
    ({"output": {"path": "gs://bucket/out"}}, "output.path"),  # no conditional writes
    ({"output": {"path": "s3://bucket"}}, "output.path"),  # the bucket itself
])
def test_rules_across_keys(changes, key):
    assert error_of(minimal(**changes)).key == key


def test_floats_written_without_a_dot_are_floats(tmp_path):
    # PyYAML reads 1e-3 as a string (YAML 1.1); the schema accepts it as the number.
    path = tmp_path / "job.yaml"
    path.write_text("pipeline: fit\ninput: {path: x.zarr}\noutput: {path: o}\n"
                    "model: {n_components: 2, tol: 1e-3}\n")
    assert load_config(path).model.tol == 0.001


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("pipeline: fit\npipeline: segment\n")
    with pytest.raises(ConfigError, match="appears twice"):
        load_config(path)


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("pipeline: [fit\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_overrides_are_yaml_scalars(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("pipeline: fit\ninput: {path: x.zarr}\noutput: {path: o}\n"
                    "model: {n_components: 2}\n")
    config = load_config(path, ["model.n_components=5", "model.tol=0.5", "output.overwrite=true",
                                "cluster.address=tcp://127.0.0.1:8786", "model.load=null",
                                "training.sample=1000"])
    assert config.model.n_components == 5 and config.model.tol == 0.5
    assert config.output.overwrite is True and config.model.load is None
    assert config.training.sample == 1000
    assert config.cluster.kind == "address"


def test_override_of_unknown_key_is_reported(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("pipeline: fit\ninput: {path: x.zarr}\noutput: {path: o}\n"
                    "model: {n_components: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["model.n_component=5"])
    assert info.value.key == "model.n_component" and "n_components" in str(info.value)


@pytest.mark.parametrize("assignment", ["model.n_components", "=3"])
def test_malformed_override(assignment):
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_override({}, assignment)


def test_override_through_a_scalar_is_refused():
    with pytest.raises(ConfigError) as info:
        apply_override({"model": 3}, "model.tol=1")
    assert info.value.key == "model"


def test_cluster_kinds_are_a_registry():
    with pytest.raises(ConfigError) as info:
        check_cluster(ClusterConfig.from_dict({"kind": "locl"}))
    assert info.value.key == "cluster.kind" and "did you mean 'local'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        check_cluster(ClusterConfig.from_dict({"kind": "address"}))
    assert info.value.key == "cluster.address"
    with pytest.raises(ConfigError) as info:
        check_cluster(ClusterConfig.from_dict({"kind": "local", "address": "tcp://h:1"}))
    assert info.value.key == "cluster.address"
    address = ClusterConfig.from_dict({"address": "tcp://h:8786"})
    check_cluster(address)
    assert "tcp://h:8786" in describe_cluster(address)


def test_checkpoint_sits_beside_the_output():
    config = JobConfig.from_dict(minimal(output={"path": "out/run"}))
    assert Path(config.checkpoint_path) == Path("out/run.checkpoint")
    config = JobConfig.from_dict(minimal(output={"path": "s3://bucket/out/run/"}))
    assert config.checkpoint_path == "s3://bucket/out/run.checkpoint"


# The model keys whose defaults are the job's own (see ModelConfig), not the estimator's.
JOB_DEFAULTS = {"n_components": None, "random_state": 0}


def test_model_keys_take_the_estimator_s_defaults_ranges_and_choices():
    fields = {spec.name: spec for spec in dataclasses.fields(ModelConfig)}
    table = {**BAYESIAN_MIXTURE_PARAMETERS, **GAUSSIAN_MIXTURE_PARAMETERS}
    for name in set(fields) - {"load", "kind", "update"} - set(JOB_DEFAULTS):
        parameter, spec = table[name], fields[name]
        assert spec.default == parameter.default, name
        assert spec.metadata["low"] == parameter.low, name
        assert spec.metadata["choices"] == parameter.choices, name
    assert {name: fields[name].default for name in JOB_DEFAULTS} == JOB_DEFAULTS


def test_the_model_section_builds_the_estimator_it_describes():
    model = ModelConfig.from_dict({"n_components": 4, "tol": 0.5, "persist": True, "load": None})
    params = model.estimator_params()
    assert set(params) == {spec.name for spec in dataclasses.fields(ModelConfig)} - {
        "load", "kind", "update", "persist", *PRIORS}  # a Gaussian mixture's: no priors
    assert set(params) <= set(GAUSSIAN_MIXTURE_PARAMETERS)
    bayesian = ModelConfig.from_dict({"n_components": 4, "kind": "bayesian"}).estimator_params()
    assert set(bayesian) == set(params) | set(PRIORS)
    assert set(bayesian) <= set(BAYESIAN_MIXTURE_PARAMETERS)
    assert params["n_components"] == 4 and params["tol"] == 0.5 and params["random_state"] == 0


def test_config_error_is_the_schema_s():
    assert ConfigError is schema.ConfigError
