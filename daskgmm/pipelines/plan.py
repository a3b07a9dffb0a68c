"""A job checked and planned before any work: what every pipeline's ``prepare`` returns.

A pipeline module has ``prepare(config, resume=False) -> Prepared``, which checks everything
that can be checked without doing work (raising :class:`~daskgmm.config.ConfigError`) and
describes the plan, and ``run(prepared) -> dict``, which does the work on the current Dask client
and returns a summary. All reading and writing goes through :mod:`daskgmm.store` (and
:mod:`daskgmm.model_format`, :mod:`daskgmm.images`, :mod:`daskgmm.tables`).
"""

from dataclasses import dataclass, field

from daskgmm import GaussianMixture
from daskgmm.guard import Guard

from .job_model import load_saved_model
from .outputs import check_output, job_guard
from .training import Checkpoint, Standardizer, fingerprint


@dataclass
class Plan:
    """What a job will do, for ``--dry-run`` and the start of a run."""

    pipeline: str
    inputs: list
    steps: list
    outputs: list


@dataclass
class Prepared:
    """A checked job: its config, inputs, saved model (if applied) and checkpoint."""

    config: object
    sources: dict
    checkpoint: Checkpoint
    guard: Guard
    loaded: GaussianMixture = None
    scaler: Standardizer = None
    resumed: object = None
    plan: Plan = None
    extra: dict = field(default_factory=dict)
    #: The summary of a job found to have nothing to do: the runner then opens no cluster.
    nothing_to_do: dict = None

    @property
    def n_components(self):
        """Components of the model the job applies: the loaded one's, or ``model``'s."""
        return self.loaded.n_components if self.loaded else self.config.model.n_components


def prepare_job(config, sources, n_features, resume, fit_sections=()):
    """Clear every path the job writes, load ``model.load`` and find a checkpoint to resume.

    Parameters
    ----------
    config : JobConfig
    sources : dict of str to Source
    n_features : int
        Features (channels) of the input, checked against a loaded model.
    resume : bool
        Continue from the checkpoint if there is one.
    fit_sections : tuple of Section
        Sections besides input, model and training that change what is fitted.

    Returns
    -------
    Prepared
    """
    guard = job_guard(config)
    check_output(config, guard)
    for source in sources.values():
        if source.creates is not None:
            source.creates.check(guard)
    loaded, scaler = (None, None) if config.model.load is None else \
        load_saved_model(config.model, n_features)
    sections = (config.input, config.model, config.training) + tuple(fit_sections)
    checkpoint = Checkpoint(str(config.checkpoint_path), config.checkpoint.every,
                            fingerprint(*sections), _checkpoints(config, loaded), guard)
    if checkpoint.enabled:
        checkpoint.clear()
    resumed = checkpoint.load() if resume else None
    return Prepared(config, sources, checkpoint, guard, loaded, scaler, resumed)


def _checkpoints(config, loaded):
    """Whether the job saves a checkpoint: only when it fits, and not in batch mode (a killed
    run's inputs are claimed afresh and refitted)."""
    return config.checkpoint.enabled and loaded is None and config.batch is None


def describe_fit(prepared, rows_name="rows"):
    """Plan lines for how the model is obtained."""
    config = prepared.config
    if prepared.loaded is not None:
        model = prepared.loaded
        scaled = ", standardized as when it was fitted" if prepared.scaler else ""
        return [f"apply the model saved at {config.model.load} ({model.n_components} "
                f"{model.covariance_type} components{scaled})"]
    model = config.model
    sample = config.training.sample
    rows = f"all {rows_name}" if sample is None else f"about {sample} random {rows_name}"
    name = "BayesianGaussianMixture" if model.kind == "bayesian" else "GaussianMixture"
    lines = [f"fit {name}(n_components={model.n_components}, covariance_type="
             f"{model.covariance_type!r}, max_iter={model.max_iter}, tol={model.tol}, n_init="
             f"{model.n_init}, init_params={model.init_params!r}, random_state="
             f"{model.random_state}) on {rows}"
             + (", standardized per feature" if config.training.standardize else "")]
    return lines + [describe_checkpoint(prepared)]


def describe_checkpoint(prepared, when=None):
    """Plan line for checkpointing and resuming (saved ``when``: every few iterations)."""
    checkpoint = prepared.checkpoint
    if not checkpoint.enabled:
        return "checkpoint: off"
    when = when or f"every {checkpoint.every} iteration(s)"
    line = f"checkpoint: {checkpoint.path}, {when}"
    if prepared.resumed is not None:
        line += f"; resuming from it ({_resume_point(prepared.resumed)})"
    return line


def _resume_point(saved):
    if isinstance(saved, tuple):  # a grid's progress
        return f"{len(saved[1].get('rows', []))} model(s) already fitted"
    run = saved.current
    iteration = f", iteration {run.n_iter}" if run is not None else " (starting)"
    return f"initialisation {saved.init + 1}{iteration}"
