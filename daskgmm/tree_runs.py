"""Partial merge trees of several runs of a pass's leaves, added in any order.

A task of a pass over persisted chunks runs the chunks its worker holds, which ``persist``
rarely leaves consecutive: one task per run of them cost a few milliseconds each (bench/README.md).
So a task returns one :class:`daskgmm.tree.PartialTree` per run of consecutive leaves it ran, and
adding two :class:`LeafRuns` folds each run into the runs right before and after it, in leaf
order. Partial trees of adjacent runs give the same tree in any grouping, so the root is the one
of :func:`daskgmm.tree.tree_reduce` to the last bit, whichever runs each task held.
"""

from itertools import groupby

from .tree import PartialTree


class LeafRuns:
    """Disjoint runs of a pass's leaves, each merged as a :class:`daskgmm.tree.PartialTree`.

    Parameters
    ----------
    runs : list of (int, int, PartialTree)
        ``(first leaf, leaf after the last, partial tree)``, sorted and not touching.
    """

    def __init__(self, runs):
        self._runs = runs

    @classmethod
    def of_leaves(cls, n_leaves, split_every, indexed_values):
        """The runs of leaves given as ``(leaf index, value)`` in increasing leaf order."""
        runs = []
        for _, run in groupby(enumerate(indexed_values), key=lambda item: item[1][0] - item[0]):
            leaves = [leaf for _, leaf in run]
            runs.append((leaves[0][0], leaves[-1][0] + 1,
                         PartialTree.of_leaves(n_leaves, split_every, leaves)))
        return cls(runs)

    def __add__(self, other):
        """The runs of both, each folded into the run ending where it starts."""
        runs = []
        for start, stop, tree in sorted(self._runs + other._runs, key=lambda run: run[0]):
            if runs and runs[-1][1] > start:
                raise ValueError(f"leaves {start} to {stop - 1} are merged twice")
            if runs and runs[-1][1] == start:
                first, _, before = runs.pop()
                start, tree = first, before + tree
            runs.append((start, stop, tree))
        return LeafRuns(runs)

    def result(self):
        """The value at the root; every leaf must have been merged in."""
        if len(self._runs) != 1:
            raise ValueError(f"the runs of leaves leave {len(self._runs) - 1} gaps")
        return self._runs[0][2].result()
