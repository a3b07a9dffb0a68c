"""The fixed merge tree: partial trees of any runs of leaves, merged in any grouping, give it."""

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskgmm.tree import PartialTree, tree_reduce


@dataclass(frozen=True)
class Merged:
    """A value whose sum records what was merged, and in which order."""

    tree: object

    def __add__(self, other):
        return Merged((self.tree, other.tree))


def leaves(start, stop):
    return [(index, Merged(index)) for index in range(start, stop)]


@st.composite
def cut_and_grouping(draw):
    """Leaves, fan-in, a cut of the leaves into runs and an order of merging adjacent runs."""
    n_leaves = draw(st.integers(1, 200))
    split_every = draw(st.integers(2, 9))
    cuts = draw(st.sets(st.integers(1, max(n_leaves - 1, 1)), max_size=30))
    bounds = [0] + sorted(cut for cut in cuts if cut < n_leaves) + [n_leaves]
    merges = draw(st.lists(st.integers(0, 10**6), min_size=len(bounds) - 2,
                           max_size=len(bounds) - 2))
    return n_leaves, split_every, bounds, merges


@settings(max_examples=300, deadline=None)
@given(cut_and_grouping())
def test_partial_trees_merge_into_the_fixed_tree(case):
    n_leaves, split_every, bounds, merges = case
    parts = [PartialTree.of_leaves(n_leaves, split_every, leaves(start, stop))
             for start, stop in zip(bounds, bounds[1:])]
    for choice in merges:
        at = choice % (len(parts) - 1)
        parts[at : at + 2] = [parts[at] + parts[at + 1]]

    (whole,) = parts
    assert whole.result() == tree_reduce([Merged(i) for i in range(n_leaves)], split_every)


def test_a_run_folds_what_it_holds_from_a_node_first_child_on():
    # Leaves 4..11 of a fan-in 4 tree over 16: nodes (1, 1) and (1, 2) are whole, but their
    # parent's fold starts with node (1, 0), which is not here: they stay apart.
    tree = PartialTree.of_leaves(16, 4, leaves(4, 12))
    assert [(p.level, p.index, p.merged) for p in tree._pieces] == [(1, 1, 4), (1, 2, 4)]

    # Leaves 0..5: node (1, 0) is whole and starts the root; leaves 4 and 5 start node (1, 1).
    tree = PartialTree.of_leaves(16, 4, leaves(0, 6))
    assert [(p.level, p.index, p.merged) for p in tree._pieces] == [(2, 0, 1), (1, 1, 2)]


def test_an_incomplete_tree_has_no_result():
    with pytest.raises(ValueError, match="every leaf"):
        PartialTree.of_leaves(10, 3, leaves(0, 9)).result()


def test_partial_trees_of_different_trees_do_not_merge():
    with pytest.raises(ValueError, match="different trees"):
        PartialTree.of_leaves(10, 3, leaves(0, 5)) + PartialTree.of_leaves(11, 3, leaves(5, 11))


def test_one_leaf_is_the_whole_tree():
    assert PartialTree.of_leaves(1, 8, leaves(0, 1)).result() == Merged(0)
