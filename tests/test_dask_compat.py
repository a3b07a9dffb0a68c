"""The behaviour of dask's private API that daskgmm relies on (daskgmm/dask_compat.py)."""

import dask
import dask.array as da
import numpy as np

from daskgmm.dask_compat import DataNode, Task, TaskRef, active_client, data_nodes


def test_a_task_runs_its_function_on_referenced_and_inline_arguments():
    graph = {"x": DataNode("x", 2), "y": Task("y", np.add, TaskRef("x"), 3)}
    assert dask.get(graph, "y") == 5
    assert graph["y"].dependencies == {"x"}


def test_substituting_a_dependency_inlines_its_value():
    task = Task("y", np.multiply, TaskRef("x"), 4)
    inlined = task.substitute({"x": DataNode(None, 5)})
    assert inlined.dependencies == set() and dask.get({"y": inlined}, "y") == 20


def test_an_arrays_chunk_tasks_are_tasks_and_persisted_chunks_are_not():
    array = da.ones(10, chunks=5) + 1
    layer = dict(array.__dask_graph__().layers[array.name])
    assert all(isinstance(node, Task) for node in layer.values())
    persisted = array.persist(scheduler="threads")
    graph = dict(persisted.__dask_graph__())
    assert not any(isinstance(node, Task) for node in graph.values())


def test_plain_values_of_a_legacy_graph_are_data_nodes_and_tasks_are_left_out():
    nodes = data_nodes({"z": np.arange(3), "t": (np.sum, "z")})
    assert list(nodes) == ["z"] and isinstance(nodes["z"], DataNode)
    np.testing.assert_array_equal(nodes["z"].value, np.arange(3))


def test_the_active_client_is_found_only_while_it_is_the_scheduler(client):
    assert active_client() is client
    with dask.config.set(scheduler="threads"):
        assert active_client() is None
