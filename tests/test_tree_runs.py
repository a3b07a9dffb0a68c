"""Runs of leaves in any number per task, added in any order, give the fixed tree to the bit."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskgmm.tree import tree_reduce
from daskgmm.tree_runs import LeafRuns
from test_tree import Merged, leaves


@st.composite
def tasks_and_order(draw):
    """Leaves, fan-in, the task each leaf runs in (any, as persist places chunks) and an order
    of adding the tasks' results two at a time, any two."""
    n_leaves = draw(st.integers(1, 120))
    split_every = draw(st.integers(2, 9))
    n_tasks = draw(st.integers(1, min(n_leaves, 12)))
    task_of = draw(st.lists(st.integers(0, n_tasks - 1), min_size=n_leaves, max_size=n_leaves))
    picks = draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
                          min_size=n_tasks, max_size=n_tasks))
    return n_leaves, split_every, task_of, picks


@settings(max_examples=300, deadline=None)
@given(tasks_and_order())
def test_runs_of_any_tasks_added_in_any_order_merge_into_the_fixed_tree(case):
    n_leaves, split_every, task_of, picks = case
    tasks = [[leaf for leaf in leaves(0, n_leaves) if task_of[leaf[0]] == task]
             for task in sorted(set(task_of))]
    parts = [LeafRuns.of_leaves(n_leaves, split_every, task) for task in tasks]
    for first, second in picks:
        if len(parts) == 1:
            break
        left = parts.pop(first % len(parts))
        right = parts.pop(second % len(parts))
        parts.append(left + right)

    (whole,) = parts
    assert whole.result() == tree_reduce([Merged(i) for i in range(n_leaves)], split_every)


def test_a_task_holding_every_other_leaf_keeps_one_run_per_leaf():
    tree = LeafRuns.of_leaves(8, 2, [leaf for leaf in leaves(0, 8) if leaf[0] % 2 == 0])

    with pytest.raises(ValueError, match="leave 3 gaps"):
        tree.result()


def test_leaves_merged_twice_are_refused():
    with pytest.raises(ValueError, match="leaves 2 to 4 are merged twice"):
        LeafRuns.of_leaves(8, 2, leaves(0, 4)) + LeafRuns.of_leaves(8, 2, leaves(2, 5))
