"""Where a job's Dask work runs: a small registry of cluster kinds, each opening a Client.

Each kind (:class:`daskgmm.cluster_kind.ClusterKind`) checks, describes and opens one kind of
cluster, and names the kind-specific keys of the ``cluster`` section it uses (any other such key
set in a job is a mistake). ``local`` starts an embedded ``LocalCluster``; ``address`` connects
to a running scheduler; ``slurm`` and ``pbs`` submit one batch job per worker through
dask-jobqueue (extra ``hpc``); ``kubernetes`` creates a ``DaskCluster`` through the Dask
operator's ``KubeCluster`` (extra ``kubernetes``). More kinds are added with :func:`register`.
"""

import difflib
import importlib.util
import logging
import warnings
from contextlib import contextmanager

from .cluster_address import ADDRESS, scheduler_address
from .cluster_jobqueue import JOBQUEUE, jobqueue_cluster_class, jobqueue_options
from .cluster_kind import DISTRIBUTED_LOG_LEVEL, ClusterKind, import_extra
from .cluster_kubernetes import KUBERNETES, kubernetes_cluster_spec
from .cluster_local import LOCAL
from .config import ConfigError

__all__ = ["KINDS", "ClusterKind", "check_cluster", "dashboard_link", "describe_cluster",
           "import_extra", "jobqueue_cluster_class", "jobqueue_options",
           "kubernetes_cluster_spec", "open_client", "register", "scheduler_address"]

# Keys of the cluster section that only some kinds use; ClusterKind.keys says which.
KIND_KEYS = ("address", "minimum", "maximum", "cores", "memory", "queue", "account", "walltime",
             "image", "namespace", "spec")

# Keys sizing kind local's LocalCluster. Other kinds ignore them with a warning rather than an
# error, so that one config (configs/segment.yaml) also runs with --set cluster.kind=...
LOCAL_SIZING_KEYS = ("threads_per_worker", "memory_limit", "processes")

KINDS = {"local": LOCAL, "address": ADDRESS, "slurm": JOBQUEUE, "pbs": JOBQUEUE,
         "kubernetes": KUBERNETES}


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
    """Raise :class:`ConfigError` if the ``cluster`` section cannot describe a cluster.

    Checks that the kind is known, that no key of another kind is set, that the kind's
    optional packages are installed, and the kind's own rules. Warns about keys sizing a
    LocalCluster (:data:`LOCAL_SIZING_KEYS`) set for another kind, which ignores them.
    """
    kind = _kind(config)
    for key in KIND_KEYS:
        if getattr(config, key) is not None and key not in kind.keys:
            users = sorted(name for name, other in KINDS.items() if key in other.keys)
            raise ConfigError(f"only used with cluster.kind {' or '.join(users)} (kind is "
                              f"{config.kind})", f"cluster.{key}")
    if config.kind != "local":
        for key in LOCAL_SIZING_KEYS:
            if getattr(config, key) is not None:
                warnings.warn(f"cluster.{key} is ignored: it sizes cluster.kind local only "
                              f"(kind is {config.kind})", stacklevel=2)
    kind.check(config)


def describe_cluster(config):
    """Return one line saying where the job will run."""
    return _kind(config).describe(config)


@contextmanager
def open_client(config, log_level=logging.WARNING):
    """Yield a ``distributed.Client`` for the ``cluster`` section; close what was started.

    Only distributed's log records of at least ``log_level`` reach stderr, from this process
    and from a local cluster's workers, until the cluster's event loop has stopped: a cluster
    restores its own log level while closing, before its scheduler has sent its last messages,
    and those that find a worker already gone are logged with a ``CommClosedError`` traceback.
    """
    token = DISTRIBUTED_LOG_LEVEL.set(log_level)
    try:
        with _distributed_log_filter(log_level), _kind(config).open(config) as client:
            yield client
    finally:
        DISTRIBUTED_LOG_LEVEL.reset(token)


@contextmanager
def _distributed_log_filter(level):
    """Keep distributed's log records under ``level`` off this process's handlers meanwhile."""
    import distributed  # noqa: F401  (sets up its loggers and their handlers)

    def keep(record):
        return record.levelno >= level

    loggers = [log for name, log in list(logging.Logger.manager.loggerDict.items())
               if name.split(".")[0] == "distributed" and isinstance(log, logging.Logger)]
    # Some of distributed's loggers have handlers of their own and do not propagate.
    handlers = list(dict.fromkeys(handler for log in loggers for handler in log.handlers))
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


def dashboard_link(client):
    """Return the dashboard address of ``client``'s scheduler, or a note why there is none."""
    link = client.dashboard_link
    if importlib.util.find_spec("bokeh") is None:  # the scheduler serves it only with bokeh
        return f"{link} (not served: install bokeh to see it)"
    return link
