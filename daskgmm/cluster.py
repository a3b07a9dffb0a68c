"""Where a job's Dask work runs: a small registry of cluster kinds, each opening a Client.

A kind is three functions: ``check`` (config mistakes, before any work), ``describe`` (one line
for the plan) and ``open`` (a context manager yielding a connected ``distributed.Client``), plus
the kind-specific keys of the ``cluster`` section it uses (any other such key set in a job is a
mistake). ``local`` starts an embedded ``LocalCluster``; ``address`` connects to a running
scheduler; ``slurm`` and ``pbs`` submit one batch job per worker through dask-jobqueue (extra
``hpc``); ``kubernetes`` creates a ``DaskCluster`` through the Dask operator's ``KubeCluster``
(extra ``kubernetes``). More kinds are added with :func:`register`.
"""

import contextvars
import difflib
import importlib
import importlib.util
import logging
import secrets
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dask.config
import yaml
from dask.utils import parse_bytes

from .config import ConfigError

# Keys of the cluster section that only some kinds use; ClusterKind.keys says which.
KIND_KEYS = ("address", "minimum", "maximum", "cores", "memory", "queue", "account", "walltime",
             "image", "namespace", "spec")

# Keys sizing kind local's LocalCluster. Other kinds ignore them with a warning rather than an
# error, so that one config (configs/segment.yaml) also runs with --set cluster.kind=...
LOCAL_SIZING_KEYS = ("threads_per_worker", "memory_limit", "processes")

# Where kind kubernetes's workers get daskgmm's code when the job names no image.
IMAGE_HINT = "ghcr.io/daskgmm/daskgmm:0.1.0"

# Seconds after which the Dask operator deletes an idle cluster that kind kubernetes created.
IDLE_TIMEOUT = 600

# The least level of distributed's log records written to stderr while a client is open (see
# open_client); WARNING, as a LocalCluster keeps it by default.
_LOG_LEVEL = contextvars.ContextVar("daskgmm_distributed_log_level", default=logging.WARNING)


@dataclass(frozen=True)
class ClusterKind:
    """How to validate, describe and open one kind of cluster, and which keys it uses."""

    check: Callable
    describe: Callable
    open: Callable
    keys: tuple = ()


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
    token = _LOG_LEVEL.set(log_level)
    try:
        with _distributed_log_filter(log_level), _kind(config).open(config) as client:
            yield client
    finally:
        _LOG_LEVEL.reset(token)


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


# ------------------------------------------------------------------ sizing


def _check_worker_count(config):
    if config.n_workers is None and not config.adaptive:
        raise ConfigError(f"missing required key (kind {config.kind} starts no workers by "
                          "itself: set n_workers, or minimum and maximum to scale adaptively)",
                          "cluster.n_workers")


def _check_memory(config):
    if config.memory is not None:
        try:
            parse_bytes(config.memory)
        except ValueError:
            raise ConfigError(f"expected an amount of memory such as '16GiB', got "
                              f"{config.memory!r}", "cluster.memory") from None


def _describe_size(config):
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
def _client_of(cluster, config):
    """Size ``cluster``, yield a client of it, then close both."""
    from distributed import Client

    with cluster:
        _size(cluster, config)
        with Client(cluster, timeout=config.timeout) as client:
            yield client


# ------------------------------------------------------------------ local


def _check_local(config):
    """Nothing beyond the keys: a LocalCluster sizes itself from the machine by default."""


def _local_options(config):
    options = {
        "n_workers": (config.minimum or 0) if config.adaptive else config.n_workers,
        "threads_per_worker": config.threads_per_worker,
        "memory_limit": _local_memory_limit(config),
        "processes": _local_processes(config),
        "dashboard_address": config.dashboard_address,
        # Its workers log to this process's stderr, or to their processes' own, inherited from it.
        "silence_logs": _LOG_LEVEL.get(),
    }
    return {name: value for name, value in options.items() if value is not None}


def _local_memory_limit(config):
    return "auto" if config.memory_limit is None else config.memory_limit


def _local_processes(config):
    return True if config.processes is None else config.processes


def _describe_local(config):
    workers = f"{config.n_workers or 'auto'} worker(s)"
    if config.adaptive:
        workers = _describe_size(config)
    threads = config.threads_per_worker or "auto"
    mode = "processes" if _local_processes(config) else "threads in this process"
    return (f"local: LocalCluster with {workers} x {threads} thread(s), "
            f"memory_limit {_local_memory_limit(config)}, {mode}")


def _open_local(config):
    from distributed import LocalCluster

    return _client_of(LocalCluster(**_local_options(config)), config)


register("local", ClusterKind(_check_local, _describe_local, _open_local,
                              keys=("minimum", "maximum")))


# ------------------------------------------------------------------ address


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


register("address", ClusterKind(_check_address, _describe_address, _open_address,
                                keys=("address",)))


# ------------------------------------------------------------------ slurm, pbs

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
    _check_worker_count(config)
    _check_memory(config)
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
            f"{_describe_size(config)}, one batch job per worker with {settings['cores']} "
            f"core(s) and {settings['memory']}" + "".join(f", {detail}" for detail in details))


def _open_jobqueue(config):
    return _client_of(jobqueue_cluster_class(config)(**jobqueue_options(config)), config)


JOBQUEUE_KEYS = ("minimum", "maximum", "cores", "memory", "queue", "account", "walltime")
register("slurm", ClusterKind(_check_jobqueue, _describe_jobqueue, _open_jobqueue, JOBQUEUE_KEYS))
register("pbs", ClusterKind(_check_jobqueue, _describe_jobqueue, _open_jobqueue, JOBQUEUE_KEYS))


# ------------------------------------------------------------------ kubernetes


def _read_cluster_manifest(path):
    try:
        manifest = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the DaskCluster manifest: {error}",
                          "cluster.spec") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "DaskCluster":
        raise ConfigError(f"expected a DaskCluster manifest (kind: DaskCluster) in {path}",
                          "cluster.spec")
    return manifest


def _operator_default_spec(operator, config):
    spec = operator.make_cluster_spec(name="daskgmm", image=config.image)
    # The operator's template passes its commands as container args; daskgmm's image has an
    # entrypoint (python -m daskgmm.run) that would receive them, so run dask directly instead.
    for role in ("scheduler", "worker"):
        container = spec["spec"][role]["spec"]["containers"][0]
        arguments = container.pop("args")
        container["command"] = ["dask", role, *arguments[1:]]
    return spec


def _set_flag(arguments, flag, value):
    """Give ``flag`` the ``value`` in a command line (a list), replacing the one it had."""
    if flag in arguments:
        arguments[arguments.index(flag) + 1] = value
    else:
        arguments += [flag, value]


def _size_worker(container, config):
    """Make ``cores`` and ``memory`` the worker container's resources and dask worker flags."""
    arguments = container["args" if "args" in container else "command"]
    settings = {}
    if config.cores is not None:
        settings["cpu"] = str(config.cores)
        _set_flag(arguments, "--nthreads", settings["cpu"])
    if config.memory is not None:
        settings["memory"] = str(parse_bytes(config.memory))
        _set_flag(arguments, "--memory-limit", settings["memory"])
    if settings:
        resources = container.get("resources") or {}
        container["resources"] = {part: {**(resources.get(part) or {}), **settings}
                                  for part in ("requests", "limits")}


def _name_uniquely(spec):
    """Suffix the cluster's name, so that two runs never share (or delete) one cluster."""
    name = f"{spec['metadata']['name']}-{secrets.token_hex(3)}"
    spec["metadata"]["name"] = name
    selector = spec["spec"]["scheduler"].get("service", {}).get("selector", {})
    if "dask.org/cluster-name" in selector:
        selector["dask.org/cluster-name"] = name


def kubernetes_cluster_spec(config):
    """The ``DaskCluster`` resource that kind kubernetes asks the Dask operator for.

    Parameters
    ----------
    config : ClusterConfig
        A checked ``cluster`` section of kind kubernetes.

    Returns
    -------
    dict
        ``cluster.spec`` (a DaskCluster manifest) or, without it, the operator's default
        template, named uniquely, with ``image`` on every container, the worker count, and
        ``cores`` and ``memory`` as the workers' resource requests and limits and dask worker
        flags. A cluster that a killed runner leaves behind is deleted by the operator after
        :data:`IDLE_TIMEOUT` idle seconds.
    """
    operator = import_extra(config, "dask_kubernetes.operator", "kubernetes")
    if config.spec is not None:
        spec = _read_cluster_manifest(config.spec)
    else:
        spec = _operator_default_spec(operator, config)
    _name_uniquely(spec)
    spec["spec"]["idleTimeout"] = spec["spec"].get("idleTimeout") or IDLE_TIMEOUT
    for role in ("scheduler", "worker"):
        for container in spec["spec"][role]["spec"]["containers"]:
            container["image"] = config.image or container["image"]
    worker = spec["spec"]["worker"]
    worker["replicas"] = (config.minimum or 0) if config.adaptive else config.n_workers
    _size_worker(worker["spec"]["containers"][0], config)
    return spec


def _check_kubernetes(config):
    import_extra(config, "dask_kubernetes.operator", "kubernetes")
    _check_worker_count(config)
    _check_memory(config)
    if config.spec is not None:
        _read_cluster_manifest(config.spec)
    elif config.image is None:
        raise ConfigError("missing required key (the workers run daskgmm's code, so they need "
                          f"an image with daskgmm installed, e.g. {IMAGE_HINT}; or give a "
                          "DaskCluster manifest in cluster.spec)", "cluster.image")


def _describe_kubernetes(config):
    template = config.spec or "the operator's default DaskCluster"
    return (f"kubernetes: a DaskCluster from {template} through the Dask operator, "
            f"{_describe_size(config)}, image {config.image or 'from the manifest'}, "
            f"{config.cores or 'default'} core(s) and {config.memory or 'default'} memory each")


def _open_kubernetes(config):
    operator = import_extra(config, "dask_kubernetes.operator", "kubernetes")
    cluster = operator.KubeCluster(custom_cluster_spec=kubernetes_cluster_spec(config),
                                   namespace=config.namespace, quiet=True)
    return _client_of(cluster, config)


register("kubernetes", ClusterKind(
    _check_kubernetes, _describe_kubernetes, _open_kubernetes,
    keys=("minimum", "maximum", "cores", "memory", "image", "namespace", "spec")))
