"""Dask's private API, in one place: task specs for building graphs, and the active client.

:mod:`daskgmm.graph` builds a pass's graph from ``dask._task_spec`` nodes (no public API builds
a graph of this shape), and the engine asks the current scheduler for its distributed client.
Both are private to dask and may change in any release: everything daskgmm relies on is named
here, and ``tests/test_dask_compat.py`` pins the behaviour relied on, so a change in dask fails
there first.
"""

import dask
from dask._task_spec import DataNode, Task, TaskRef, convert_legacy_graph

__all__ = ["DataNode", "Task", "TaskRef", "active_client", "data_nodes"]


def data_nodes(mapping):
    """The entries of a legacy (dict-of-tuples) graph ``mapping`` that are plain data, as
    ``{key: DataNode}``; tasks and aliases are left out."""
    nodes = convert_legacy_graph(mapping) if mapping else {}
    return {key: node for key, node in nodes.items() if isinstance(node, DataNode)}


def active_client():
    """The distributed client that ``dask.compute`` would run on now, or None."""
    try:
        from distributed import Client
    except ImportError:
        return None
    # A client sets itself as the scheduler through its bound ``get`` method.
    client = getattr(dask.base.get_scheduler(), "__self__", None)
    return client if isinstance(client, Client) else None
