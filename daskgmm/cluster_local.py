"""Cluster kind ``local``: an embedded ``LocalCluster``, sized from the machine by default."""

from .cluster_kind import DISTRIBUTED_LOG_LEVEL, ClusterKind, client_of, describe_size


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
        "silence_logs": DISTRIBUTED_LOG_LEVEL.get(),
    }
    return {name: value for name, value in options.items() if value is not None}


def _local_memory_limit(config):
    return "auto" if config.memory_limit is None else config.memory_limit


def _local_processes(config):
    return True if config.processes is None else config.processes


def _describe_local(config):
    workers = f"{config.n_workers or 'auto'} worker(s)"
    if config.adaptive:
        workers = describe_size(config)
    threads = config.threads_per_worker or "auto"
    mode = "processes" if _local_processes(config) else "threads in this process"
    return (f"local: LocalCluster with {workers} x {threads} thread(s), "
            f"memory_limit {_local_memory_limit(config)}, {mode}")


def _open_local(config):
    from distributed import LocalCluster

    return client_of(LocalCluster(**_local_options(config)), config)


LOCAL = ClusterKind(_check_local, _describe_local, _open_local, keys=("minimum", "maximum"))
