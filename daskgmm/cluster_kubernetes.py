"""Cluster kind ``kubernetes``: a ``DaskCluster`` through the Dask operator's ``KubeCluster``.

Needs daskgmm's extra ``kubernetes``.
"""

import secrets
from pathlib import Path

import yaml
from dask.utils import parse_bytes

from .cluster_kind import ClusterKind, check_size, client_of, describe_size, import_extra
from .config import ConfigError

# Where kind kubernetes's workers get daskgmm's code when the job names no image.
IMAGE_HINT = "ghcr.io/daskgmm/daskgmm:0.1.0"

# Seconds after which the Dask operator deletes an idle cluster that kind kubernetes created.
IDLE_TIMEOUT = 600


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
    check_size(config)
    if config.spec is not None:
        _read_cluster_manifest(config.spec)
    elif config.image is None:
        raise ConfigError("missing required key (the workers run daskgmm's code, so they need "
                          f"an image with daskgmm installed, e.g. {IMAGE_HINT}; or give a "
                          "DaskCluster manifest in cluster.spec)", "cluster.image")


def _describe_kubernetes(config):
    template = config.spec or "the operator's default DaskCluster"
    return (f"kubernetes: a DaskCluster from {template} through the Dask operator, "
            f"{describe_size(config)}, image {config.image or 'from the manifest'}, "
            f"{config.cores or 'default'} core(s) and {config.memory or 'default'} memory each")


def _open_kubernetes(config):
    operator = import_extra(config, "dask_kubernetes.operator", "kubernetes")
    cluster = operator.KubeCluster(custom_cluster_spec=kubernetes_cluster_spec(config),
                                   namespace=config.namespace, quiet=True)
    return client_of(cluster, config)


KUBERNETES = ClusterKind(
    _check_kubernetes, _describe_kubernetes, _open_kubernetes,
    keys=("minimum", "maximum", "cores", "memory", "image", "namespace", "spec"))
