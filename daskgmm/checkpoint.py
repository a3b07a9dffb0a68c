"""The checkpoint's Zarr format: a fit's :class:`~daskgmm.mixture.FitState`, or a grid's
progress (named models and a JSON state), saved and read back.

A checkpoint is a Zarr group: ``current/`` and ``best/`` hold the parameters of the running and
the best finished initialisation (float64, exactly as the loop holds them), and the attributes
hold the rest (iteration bounds, the RandomState's position, the job's ``extra`` facts), so a
resumed fit performs the same operations on the same bits as one never stopped.
"""

import dataclasses

import numpy as np
import zarr

from . import atomic
from .base import EMRun, FitState
from .mixture import MixtureParams
from .generation_store import location
from .variational import VariationalParams
from .model_format import (
    read_model_group,
    read_statistics,
    write_model_group,
    write_statistics,
)
from .online import OnlineState
from .store import open_node

exists = atomic.folder_exists

CHECKPOINT = "checkpoint"
CHECKPOINT_FORMAT = "daskgmm.FitState"
_RUNS = ("current", "best")
# The parameters' classes a run may hold, by the name its group records.
_PARAMS = {cls.__name__: cls for cls in (MixtureParams, VariationalParams)}


def _write_run(group, run):
    pairs = []
    for field in dataclasses.fields(run.params):
        value = getattr(run.params, field.name)
        if isinstance(value, tuple):  # a Dirichlet process's two concentrations
            pairs.append(field.name)
        group.create_array(field.name, data=np.asarray(value, dtype=np.float64))
    if run.online is not None:
        _write_online(group.create_group("online"), run.online)
    group.attrs.update({"lower_bounds": [float(b) for b in run.lower_bounds],
                        "converged": bool(run.converged), "n_reseeded": int(run.n_reseeded),
                        "start_bound": float(run.start_bound),
                        "params": type(run.params).__name__, "pairs": pairs})


def _read_run(group):
    attrs = group.attrs
    cls = _PARAMS[attrs.get("params", "MixtureParams")]  # earlier versions: a GaussianMixture's
    values = {}
    for field in dataclasses.fields(cls):
        value = group[field.name][...]
        values[field.name] = tuple(value) if field.name in attrs.get("pairs", ()) else value
    online = _read_online(group["online"]) if "online" in group else None
    return EMRun(cls(**values), list(attrs["lower_bounds"]), attrs["converged"],
                 attrs["n_reseeded"], attrs["start_bound"], online)


def _write_online(group, online):
    """An online run's state: its counters as attributes, its running statistics as arrays."""
    group.attrs.update({"seed": online.seed, "threads": online.threads,
                        "passes": online.passes, "position": online.position,
                        "pass_bound": float(online.pass_bound),
                        "steps_before": online.steps_before,
                        "total_weight": float(online.total_weight),
                        "running": online.running is not None})
    if online.running is not None:
        write_statistics(group.create_group("running"), online.running)


def _read_online(group):
    attrs = group.attrs
    running = read_statistics(group["running"]) if attrs["running"] else None
    return OnlineState(attrs["seed"], attrs["threads"], running, attrs["passes"],
                       attrs["position"], attrs["pass_bound"], attrs["steps_before"],
                       attrs["total_weight"])


def write_fit_state(path, state, extra=None):
    """Atomically replace the checkpoint at ``path`` with ``state`` and JSON ``extra`` facts.

    ``path`` must have been cleared by the job's :class:`~daskgmm.guard.Guard`.
    """
    with atomic.atomic_directory(path, CHECKPOINT) as staging:
        group = zarr.open_group(location(staging), mode="a")  # "w" would delete the marker
        runs = [name for name in _RUNS if getattr(state, name) is not None]
        for name in runs:
            _write_run(group.create_group(name), getattr(state, name))
        attrs = {"format": CHECKPOINT_FORMAT, "init": state.init, "runs": runs,
                 "extra": extra or {}}
        if state.random_state is not None:
            kind, key, position, has_gauss, cached = state.random_state
            group.create_array("random_state_key", data=np.asarray(key, dtype=np.uint32))
            attrs["random_state"] = [kind, int(position), int(has_gauss), float(cached)]
        group.attrs.update(attrs)


def read_fit_state(path):
    """Return ``(state, extra)`` from a checkpoint written by :func:`write_fit_state`, or None.

    Raises
    ------
    ValueError
        If ``path`` holds something else.
    """
    if not exists(path):
        return None
    group = open_node(path)
    attrs = group.attrs
    if attrs.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} holds no daskgmm fit state (format {attrs.get('format')!r})")
    runs = {name: _read_run(group[name]) for name in attrs["runs"]}
    random_state = None
    if "random_state" in attrs:
        kind, position, has_gauss, cached = attrs["random_state"]
        random_state = (kind, group["random_state_key"][...], position, has_gauss, cached)
    state = FitState(attrs["init"], runs.get("current"), runs.get("best"), random_state)
    return state, dict(attrs["extra"])


def write_checkpoint(path, models, state):
    """Atomically replace the checkpoint at ``path``: named models and a JSON ``state`` dict
    (a grid's progress, as the select job saves it).

    ``path`` must have been cleared by the job's :class:`~daskgmm.guard.Guard`.
    """
    with atomic.atomic_directory(path, CHECKPOINT) as staging:
        group = zarr.open_group(location(staging), mode="a")  # "w" would delete the marker
        group.attrs.update({"state": state, "models": sorted(models)})
        for name, model in models.items():
            write_model_group(group.create_group(name), model)


def read_checkpoint(path, cls):
    """Return ``(models, state)`` from a checkpoint written by :func:`write_checkpoint`, or None."""
    if not exists(path):
        return None
    group = open_node(path)
    models = {name: read_model_group(group[name], cls) for name in group.attrs["models"]}
    return models, dict(group.attrs["state"])
