"""Where a job's Dask work runs: a small registry of cluster kinds, each opening a Client.

A kind is three functions: ``check`` (config mistakes, before any work), ``describe`` (one line
for the plan) and ``open`` (a context manager yielding a connected ``distributed.Client``).
``local`` starts an embedded ``LocalCluster``; ``address`` connects to a running scheduler.
Batch and cloud kinds (slurm, pbs, kubernetes through dask-jobqueue and dask-kubernetes) are
added with :func:`register` and need nothing else changed.
"""

import difflib
import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from .config import ConfigError


@dataclass(frozen=True)
class ClusterKind:
    """How to validate, describe and open one kind of cluster."""

    check: Callable
    describe: Callable
    open: Callable


KINDS = {}


def register(name, kind):
    """Make ``cluster.kind: name`` available to jobs."""
    KINDS[name] = kind


def _kind(config):
    try:
        return KINDS[config.kind]
    except KeyError:
        hint = difflib.get_close_matches(config.kind, KINDS, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(f"unknown cluster kind {config.kind!r}{suggestion} (available: "
                          f"{', '.join(sorted(KINDS))})", "cluster.kind") from None


def check_cluster(config):
    """Raise :class:`ConfigError` if the ``cluster`` section cannot describe a cluster."""
    _kind(config).check(config)


def describe_cluster(config):
    """Return one line saying where the job will run."""
    return _kind(config).describe(config)


@contextmanager
def open_client(config):
    """Yield a ``distributed.Client`` for the ``cluster`` section; close what was started."""
    with _kind(config).open(config) as client:
        yield client


def dashboard_link(client):
    """Return the dashboard address of ``client``'s scheduler, or a note why there is none."""
    link = client.dashboard_link
    if importlib.util.find_spec("bokeh") is None:  # the scheduler serves it only with bokeh
        return f"{link} (not served: install bokeh to see it)"
    return link


# ------------------------------------------------------------------ local


def _check_local(config):
    if config.address is not None:
        raise ConfigError("only used with cluster.kind: address (kind is local)",
                          "cluster.address")


def _local_options(config):
    options = {
        "n_workers": config.n_workers,
        "threads_per_worker": config.threads_per_worker,
        "memory_limit": config.memory_limit,
        "processes": config.processes,
        "dashboard_address": config.dashboard_address,
    }
    return {name: value for name, value in options.items() if value is not None}


def _describe_local(config):
    workers = config.n_workers or "auto"
    threads = config.threads_per_worker or "auto"
    mode = "processes" if config.processes else "threads in this process"
    return (f"local: LocalCluster with {workers} worker(s) x {threads} thread(s), "
            f"memory_limit {config.memory_limit}, {mode}")


@contextmanager
def _open_local(config):
    from distributed import Client, LocalCluster

    with LocalCluster(**_local_options(config)) as cluster, Client(cluster) as client:
        yield client


register("local", ClusterKind(_check_local, _describe_local, _open_local))


# ------------------------------------------------------------------ address


def _check_address(config):
    if not config.address:
        raise ConfigError("missing required key (cluster.kind address needs the scheduler's "
                          "address, e.g. tcp://scheduler:8786)", "cluster.address")


def _describe_address(config):
    return (f"address: the running scheduler at {config.address} (it brings its own workers; "
            "the local sizing keys are not used)")


@contextmanager
def _open_address(config):
    from distributed import Client

    with Client(config.address, timeout=config.timeout) as client:
        yield client


register("address", ClusterKind(_check_address, _describe_address, _open_address))
