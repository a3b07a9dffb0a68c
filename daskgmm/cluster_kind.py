"""What a cluster kind is made of, and the sizing and client code its kinds share.

A kind is three functions: ``check`` (config mistakes, before any work), ``describe`` (one line
for the plan) and ``open`` (a context manager yielding a connected ``distributed.Client``), plus
the kind-specific keys of the ``cluster`` section it uses.
"""

import contextvars
import importlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

from dask.utils import parse_bytes

from .config import ConfigError

# The least level of distributed's log records written to stderr while a client is open (see
# daskgmm.cluster.open_client); WARNING, as a LocalCluster keeps it by default.
DISTRIBUTED_LOG_LEVEL = contextvars.ContextVar("daskgmm_distributed_log_level",
                                               default=logging.WARNING)


@dataclass(frozen=True)
class ClusterKind:
    """How to validate, describe and open one kind of cluster, and which keys it uses."""

    check: Callable
    describe: Callable
    open: Callable
    keys: tuple = ()


def import_extra(config, module, extra):
    """Import ``module`` for ``config.kind``, or say which extra of daskgmm installs it.

    Raises
    ------
    ConfigError
        On ``cluster.kind`` when the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"kind {config.kind} needs the module {module}, which cannot be "
                          f"imported ({error}); install it with: pip install "
                          f"\"daskgmm[{extra}]\"", "cluster.kind") from None


def check_size(config):
    """Raise unless the section sets a number of workers (or bounds to scale adaptively between)
    and, if ``cluster.memory`` is set, an amount of memory."""
    if config.n_workers is None and not config.adaptive:
        raise ConfigError(f"missing required key (kind {config.kind} starts no workers by "
                          "itself: set n_workers, or minimum and maximum to scale adaptively)",
                          "cluster.n_workers")
    if config.memory is not None:
        try:
            parse_bytes(config.memory)
        except ValueError:
            raise ConfigError(f"expected an amount of memory such as '16GiB', got "
                              f"{config.memory!r}", "cluster.memory") from None


def describe_size(config):
    """Return how many workers the cluster has, or between which bounds it adapts."""
    if config.adaptive:
        return f"adaptive from {config.minimum or 0} to {config.maximum} worker(s)"
    return f"{config.n_workers} worker(s)"


def _size(cluster, config):
    """Scale ``cluster`` to the fixed size, or let it adapt between the bounds."""
    if config.adaptive:
        cluster.adapt(minimum=config.minimum or 0, maximum=config.maximum)
    elif config.n_workers is not None:
        cluster.scale(config.n_workers)


@contextmanager
def client_of(cluster, config):
    """Size ``cluster``, yield a client of it, then close both."""
    from distributed import Client

    with cluster:
        _size(cluster, config)
        with Client(cluster, timeout=config.timeout) as client:
            yield client
