"""The job schema: one typed section per part of a job, validated up front, dotted-path errors.

A job file is YAML; every section is a :class:`~daskgmm.schema.Section` (see
:mod:`daskgmm.schema` for how keys, types, ranges and choices are checked), so
``JobConfig.from_dict(d).to_dict() == d`` for a complete ``d``, and every mistake is one
:class:`ConfigError` naming the dotted key and the file. The ``model`` section takes the
estimator's defaults, ranges and choices from :data:`daskgmm.options.GAUSSIAN_MIXTURE_PARAMETERS`.

Only the shape of the file is checked here. Whether the named input exists, or the cluster kind
is known, is checked by the pipeline and :mod:`daskgmm.cluster` before any work starts.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .model_config import ModelConfig  # noqa: F401  (the job's model section, named here too)
from .object_record import check_folder_url
from .storage import StorageConfig, is_url, sibling
from .options import (
    COVARIANCE_TYPES,
    CRITERIA,
    GENERATORS,
    IDENTITIES,
    INPUT_FORMATS,
    OUTPUT_FORMATS,
    PIPELINES,
)
from .schema import (  # noqa: F401  (apply_override, parse_yaml: part of this module's API)
    ConfigError,
    Section,
    apply_override,
    join_key,
    load_section,
    option,
    parse_yaml,
    shown,
)


@dataclass
class InputConfig(Section):
    """Where the data comes from.

    ``path`` is a Zarr store (local path or fsspec URL), an OME-Zarr image, plate or well, an
    xarray Dataset or DataArray written to Zarr (``variable`` names the data variable,
    ``feature_dim`` the dim that holds the features), a folder or glob of PNG/JPEG/TIFF
    images, or CSV/Parquet files (a path or glob). ``format: auto`` tells them apart by name
    and metadata.
    """

    path: str = option()
    array: str | None = None
    format: str = option("auto", choices=INPUT_FORMATS)
    columns: list[str] | None = None
    variable: str | None = None
    feature_dim: str | None = None
    channel_axis: int = -1
    nodata: float | None = None
    mask: str | None = None
    generate: str | None = option(None, choices=GENERATORS)
    ingest_to: str | None = None

    def check(self, key):
        if self.columns is not None and not self.columns:
            raise ConfigError("must name at least one column, or be null for all", f"{key}.columns")


@dataclass
class TrainingConfig(Section):
    """Which rows (or valid pixels) the model is fitted on, how they are scaled, and how the
    model is fitted: by batch EM, or by online EM over mini-batches (``method: online``, with
    the estimator's ``batch_size`` and ``max_passes``)."""

    sample: int | None = option(None, low=1)
    level: int = option(0, low=0)
    standardize: bool = False
    method: str = option("batch", choices=("batch", "online"))
    batch_size: int | None = option(None, low=1)
    max_passes: int = option(2, low=1)

    def estimator_params(self):
        """The estimator's parameters this section sets (none for batch EM)."""
        if self.method == "batch":
            return {}
        return {"learning_method": "online", "batch_size": self.batch_size,
                "max_passes": self.max_passes}


@dataclass
class OutputConfig(Section):
    """The job's output folder and what goes in it.

    ``format: ome-zarr`` (the default for OME-Zarr input) adds the segment job's labels as an
    NGFF labels image, and its scores as NGFF images; ``geotiff`` adds the labels as tiled
    GeoTIFF files with the input's georeferencing.
    """

    path: str = option()
    overwrite: bool = False
    format: str = option("auto", choices=OUTPUT_FORMATS)
    probabilities: bool = False
    log_likelihood: bool = False
    preview: bool = True
    preview_bands: list[int] | None = None
    geotiff: bool = False

    def check(self, key):
        if is_url(self.path):
            check_folder_url(self.path, f"{key}.path")
        elif Path(self.path).name in ("", ".."):  # the job would replace a parent folder
            raise ConfigError(f"must name the output folder itself, got {shown(self.path)}",
                              f"{key}.path")
        if self.preview_bands is not None and len(self.preview_bands) not in (1, 3):
            raise ConfigError("must list 1 (grey) or 3 (red, green, blue) channel indices, got "
                              f"{shown(self.preview_bands)}", f"{key}.preview_bands")


@dataclass
class CheckpointConfig(Section):
    """Saving the EM state while fitting, so ``--resume`` can continue after a crash."""

    enabled: bool = True
    every: int = option(1, low=1)


@dataclass
class BatchConfig(Section):
    """Scheduled batches (pipeline segment): each run processes only the inputs not yet done.

    The output is then a long-lived store that every run adds to: one result folder per input,
    a manifest of what is done, and a log of the runs. An input is known by its name and its
    ``identity``: ``stat`` (size and modification time) or ``content`` (a SHA-256 of its bytes);
    a changed input is processed again. ``max_inputs`` bounds the inputs one run takes on.
    ``channels`` is how many every input must have (null: the loaded model's, else that of most
    inputs of the store's first run). Runs at the same time share the inputs through a lock
    file, taken over when it is older than ``lock_timeout`` seconds or its process is gone; the
    inputs a run claimed are claimed afresh when it has recorded no progress for
    ``claim_timeout`` seconds or its process is gone.
    """

    identity: str = option("stat", choices=IDENTITIES)
    max_inputs: int | None = option(None, low=1)
    channels: int | None = option(None, low=1)
    lock_timeout: float = option(60.0, low=0.0, low_open=True)
    claim_timeout: float = option(3600.0, low=0.0, low_open=True)


@dataclass
class ClusterConfig(Section):
    """Where the Dask work runs; ``kind`` names an entry of :data:`daskgmm.cluster.KINDS`.

    ``local`` sizes a LocalCluster (``n_workers``, ``threads_per_worker``, ``memory_limit``:
    ``auto`` if not set, ``processes``: true if not set); ``address`` joins a running
    scheduler. ``slurm``, ``pbs`` and ``kubernetes`` start one worker per batch job or pod,
    each with ``cores`` threads and ``memory``; ``queue``, ``account`` and ``walltime`` go to
    the batch system, ``image``, ``namespace`` and ``spec`` (a DaskCluster manifest used as the
    template) to the Dask operator. ``n_workers`` is a fixed size; ``minimum``/``maximum``
    scale adaptively instead. Which kinds use which key is checked by
    :func:`daskgmm.cluster.check_cluster`.
    """

    kind: str = "local"
    address: str | None = None
    n_workers: int | None = option(None, low=1)
    minimum: int | None = option(None, low=0)
    maximum: int | None = option(None, low=1)
    threads_per_worker: int | None = option(None, low=1)
    memory_limit: str | int | None = None
    processes: bool | None = None
    dashboard_address: str | None = ":8787"
    timeout: float = option(30.0, low=0.0, low_open=True)
    cores: int | None = option(None, low=1)
    memory: str | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    image: str | None = None
    namespace: str | None = None
    spec: str | None = None

    @classmethod
    def from_dict(cls, data, key=""):
        """As :meth:`Section.from_dict`; an ``address`` without a ``kind`` means kind address."""
        if isinstance(data, Mapping) and data.get("address") and "kind" not in data:
            data = {**data, "kind": "address"}
        return super().from_dict(data, key)

    @property
    def adaptive(self):
        """Whether the worker count follows the load between ``minimum`` and ``maximum``."""
        return self.minimum is not None or self.maximum is not None

    def check(self, key):
        if self.adaptive and self.n_workers is not None:
            raise ConfigError("set either n_workers (a fixed size) or minimum/maximum "
                              "(adaptive scaling), not both", join_key(key, "n_workers"))
        if self.minimum is not None and self.maximum is None:
            raise ConfigError("missing required key (adaptive scaling from cluster.minimum "
                              "needs an upper bound)", join_key(key, "maximum"))
        if self.adaptive and (self.minimum or 0) > self.maximum:
            raise ConfigError(f"must be <= cluster.maximum ({self.maximum}), got "
                              f"{self.minimum}", join_key(key, "minimum"))


@dataclass
class SelectConfig(Section):
    """The grid the ``select`` pipeline fits, and the criterion it ranks by."""

    n_components: list[int] = option([1, 2, 3, 4, 5, 6], low=1)
    covariance_types: list[str] = option(["full", "diag"], choices=COVARIANCE_TYPES)
    criterion: str = option("bic", choices=CRITERIA)
    # Also a BayesianGaussianMixture of the largest n_components per covariance type: the
    # components its prior keeps stand beside the criterion's choice in the table and plot.
    bayesian: bool = False

    def check(self, key):
        for name in ("n_components", "covariance_types"):
            values = getattr(self, name)
            if not values:
                raise ConfigError("must list at least one value", f"{key}.{name}")
            if len(set(values)) != len(values):
                raise ConfigError(f"lists a value twice: {shown(values)}", f"{key}.{name}")


@dataclass
class AnomalyConfig(Section):
    """The threshold under which a row's log-likelihood flags it, and the data to score."""

    quantile: float | None = option(None, low=0.0, high=1.0, low_open=True)
    threshold: float | None = None
    data: InputConfig | None = None

    def check(self, key):
        if (self.quantile is None) == (self.threshold is None):
            raise ConfigError("set exactly one of quantile (of the training scores) or "
                              "threshold (a log-likelihood value)", f"{key}.quantile")


@dataclass
class JobConfig(Section):
    """A whole job: the pipeline, its input, model, output and cluster."""

    pipeline: str = option(choices=PIPELINES)
    input: InputConfig = option()
    output: OutputConfig = option()
    model: ModelConfig = option(ModelConfig)
    training: TrainingConfig = option(TrainingConfig)
    checkpoint: CheckpointConfig = option(CheckpointConfig)
    cluster: ClusterConfig = option(ClusterConfig)
    storage: StorageConfig = option(StorageConfig)
    select: SelectConfig | None = None
    anomaly: AnomalyConfig | None = None
    batch: BatchConfig | None = None

    def check(self, key):
        for name, pipeline in (("select", "select"), ("anomaly", "anomaly"),
                               ("batch", "segment")):
            if getattr(self, name) is not None and self.pipeline != pipeline:
                raise ConfigError(f"applies only to pipeline: {pipeline} (this job runs "
                                  f"{self.pipeline})", name)
        if self.pipeline == "anomaly" and self.anomaly is None:
            raise ConfigError("missing required key (pipeline anomaly needs a quantile or "
                              "threshold)", "anomaly")
        self._check_model()
        if self.batch is not None:
            self._check_batch()
        if self.pipeline != "segment":
            self._check_images_only()

    def _check_images_only(self):
        """Keys of the segment job's image formats, which a job of rows has no use for."""
        for name, value in (("output.format", self.output.format != "auto"),
                            ("output.geotiff", self.output.geotiff),
                            ("training.level", self.training.level)):
            if value:
                raise ConfigError(f"applies only to pipeline: segment (this job runs "
                                  f"{self.pipeline}); remove it", name)

    def _check_batch(self):
        """Keys whose single-shot meaning has no place in a store that every run adds to."""
        unused = {
            "output.overwrite": (self.output.overwrite, "a batch store is kept and added to; "
                                 "delete it to start over"),
            "input.mask": (self.input.mask, "mark no-data pixels with input.nodata instead"),
            "input.array": (self.input.array, "every array of the Zarr group is an input"),
            "input.ingest_to": (self.input.ingest_to, "batch inputs are read where they are"),
        }
        for name, (value, reason) in unused.items():
            if value:
                raise ConfigError(f"not used in batch mode ({reason})", name)

    def _check_model(self):
        model = self.model
        if model.update == "online" and (self.batch is None or model.kind == "bayesian"):
            raise ConfigError("updates the model of a batch segment job from run to run (a "
                              "GaussianMixture's); add a batch section, or remove it",
                              "model.update")
        if self.pipeline == "select":
            if model.load is not None:
                raise ConfigError("pipeline select fits its own models; remove model.load",
                                  "model.load")
            if model.n_components is not None:
                raise ConfigError("not used by pipeline select; list the candidates in "
                                  "select.n_components", "model.n_components")
            return
        if self.pipeline == "predict" and model.load is None:
            raise ConfigError("missing required key (pipeline predict applies a saved model)",
                              "model.load")
        if model.load is None and model.n_components is None:
            raise ConfigError("missing required key (or set model.load to apply a saved model)",
                              "model.n_components")

    def paths(self):
        """Every path the job names, by dotted key (local paths and URLs alike)."""
        named = {"input.path": self.input.path, "input.mask": self.input.mask,
                 "input.ingest_to": self.input.ingest_to, "model.load": self.model.load,
                 "output.path": self.output.path}
        if self.anomaly is not None and self.anomaly.data is not None:
            named.update({"anomaly.data.path": self.anomaly.data.path,
                          "anomaly.data.mask": self.anomaly.data.mask})
        return {key: path for key, path in named.items() if path is not None}

    @property
    def checkpoint_path(self):
        """Where the EM state is saved while fitting: a sibling of the output folder."""
        return sibling(self.output.path, ".checkpoint")


def load_config(path, overrides=()):
    """Read, override and validate a job file.

    Parameters
    ----------
    path : str or Path
        The YAML job file.
    overrides : iterable of str
        ``dotted.key=value`` assignments applied on top of the file (``--set``).

    Returns
    -------
    JobConfig

    Raises
    ------
    ConfigError
        For any mistake, naming the dotted key and the file.
    """
    return load_section(JobConfig, path, overrides)
