"""Cluster kinds ``slurm`` and ``pbs``: one batch job per worker through dask-jobqueue.

Needs daskgmm's extra ``hpc``.
"""

import dask.config

from .cluster_kind import ClusterKind, check_size, client_of, describe_size, import_extra
from .config import ConfigError

JOBQUEUE_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}


def jobqueue_cluster_class(config):
    """The dask-jobqueue cluster class of ``config.kind`` (``SLURMCluster`` or ``PBSCluster``)."""
    module = import_extra(config, "dask_jobqueue", "hpc")
    return getattr(module, JOBQUEUE_CLASSES[config.kind])


def jobqueue_options(config):
    """Keyword arguments of the dask-jobqueue cluster: one single-process worker per job.

    Keys the job leaves out come from Dask's ``jobqueue.<kind>`` settings (jobqueue.yaml), as
    dask-jobqueue reads them: the site's interface, log directory or job script prologue. The
    scheduler runs in this process; its dashboard is at ``cluster.dashboard_address``.
    """
    options = {"cores": config.cores, "memory": config.memory, "queue": config.queue,
               "account": config.account, "walltime": config.walltime}
    scheduler = dask.config.get(f"jobqueue.{config.kind}.scheduler-options", None) or {}
    if config.dashboard_address is not None:
        scheduler = {**scheduler, "dashboard_address": config.dashboard_address}
    return {"processes": 1, "job_name": "daskgmm-worker", "scheduler_options": scheduler,
            **{name: value for name, value in options.items() if value is not None}}


def _check_jobqueue(config):
    jobqueue_cluster_class(config)  # also loads dask-jobqueue's default settings
    check_size(config)
    for key in ("cores", "memory"):
        if getattr(config, key) is None and dask.config.get(f"jobqueue.{config.kind}.{key}",
                                                            None) is None:
            raise ConfigError(f"missing required key (or set jobqueue.{config.kind}.{key} in "
                              "Dask's jobqueue.yaml)", f"cluster.{key}")


def _describe_jobqueue(config):
    settings = {name: getattr(config, name) or dask.config.get(f"jobqueue.{config.kind}.{name}")
                for name in ("cores", "memory", "queue", "account", "walltime")}
    details = [f"{name} {settings[name]}" for name in ("queue", "account", "walltime")
               if settings[name] is not None]
    return (f"{config.kind}: dask-jobqueue {JOBQUEUE_CLASSES[config.kind]}, "
            f"{describe_size(config)}, one batch job per worker with {settings['cores']} "
            f"core(s) and {settings['memory']}" + "".join(f", {detail}" for detail in details))


def _open_jobqueue(config):
    return client_of(jobqueue_cluster_class(config)(**jobqueue_options(config)), config)


JOBQUEUE = ClusterKind(_check_jobqueue, _describe_jobqueue, _open_jobqueue,
                       keys=("minimum", "maximum", "cores", "memory", "queue", "account",
                             "walltime"))
