"""Cluster kind ``address``: a running scheduler, which brings its own workers."""

from contextlib import contextmanager

import dask.config

from .cluster_kind import ClusterKind
from .config import ConfigError


def scheduler_address(config):
    """The scheduler to join: ``cluster.address``, else Dask's ``scheduler-address`` setting.

    Dask reads that setting from the ``DASK_SCHEDULER_ADDRESS`` environment variable, which the
    Dask operator sets in a ``DaskJob``'s runner pod, so a job there needs no address.
    """
    return config.address or dask.config.get("scheduler-address", None)


def _check_address(config):
    if not scheduler_address(config):
        raise ConfigError("missing required key (cluster.kind address needs the scheduler's "
                          "address, e.g. tcp://scheduler:8786, or DASK_SCHEDULER_ADDRESS set)",
                          "cluster.address")


def _describe_address(config):
    return (f"address: the running scheduler at {scheduler_address(config)} (it brings its own "
            "workers; the local sizing keys are not used)")


@contextmanager
def _open_address(config):
    from distributed import Client

    with Client(scheduler_address(config), timeout=config.timeout) as client:
        yield client


ADDRESS = ClusterKind(_check_address, _describe_address, _open_address, keys=("address",))
