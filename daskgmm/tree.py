"""The fixed merge tree of a pass, and partial merges of any consecutive run of its leaves.

A pass merges one result per block with ``+`` in the tree of :func:`tree_reduce`: fan-in
``split_every``, each node the left fold of its children. The tree depends on the number of
blocks alone. On a cluster, each task merges the blocks of a run as far as that run allows, as a
:class:`PartialTree`, and partial trees merge with ``+`` into the same tree whichever runs the
blocks were cut into and in whatever grouping they are merged. So the result is the same to the
last bit however a pass's blocks were spread over tasks and workers.
"""

from dataclasses import dataclass
from functools import reduce
from operator import add


def tree_reduce(values, split_every, combine=add):
    """Merge ``values`` with ``combine`` in a fixed tree of fan-in ``split_every``."""
    values = list(values)
    while len(values) > 1:
        values = [reduce(combine, values[i : i + split_every])
                  for i in range(0, len(values), split_every)]
    return values[0]


@dataclass(frozen=True)
class _Piece:
    """Node ``index`` of tree level ``level`` (0: the leaves), with its first ``merged``
    children folded into ``value``."""

    level: int
    index: int
    value: object
    merged: int


class PartialTree:
    """Part of the tree of :func:`tree_reduce` over ``n_leaves`` leaves, merged in its order.

    Holds, left to right, the nodes merged so far: whole nodes, and nodes of which only the
    first children are folded in. A node's children are folded in only from its first one on;
    children whose left siblings are not here yet stay as they are, for a partial tree to the
    left of this one to fold in when the two are added.

    Parameters
    ----------
    n_leaves : int
        Leaves of the whole tree.
    split_every : int
        The tree's fan-in.
    """

    def __init__(self, n_leaves, split_every):
        self.n_leaves = n_leaves
        self.split_every = split_every
        self._pieces = []

    @classmethod
    def of_leaves(cls, n_leaves, split_every, indexed_values):
        """The partial tree of consecutive leaves given as ``(leaf index, value)`` in order."""
        tree = cls(n_leaves, split_every)
        for index, value in indexed_values:
            tree._push(_Piece(0, index, value, 1))
        return tree

    def __add__(self, other):
        """This tree's leaves followed by ``other``'s, which must come right after them."""
        if (other.n_leaves, other.split_every) != (self.n_leaves, self.split_every):
            raise ValueError("partial trees of different trees cannot be merged")
        merged = PartialTree(self.n_leaves, self.split_every)
        merged._pieces = list(self._pieces)
        for piece in other._pieces:
            merged._push(piece)
        return merged

    def result(self):
        """The value at the root; every leaf must have been merged in."""
        if len(self._pieces) != 1 or not self._is_root(self._pieces[0]):
            raise ValueError("the partial tree does not hold every leaf")
        return self._pieces[0].value

    def _is_root(self, piece):
        return piece.level == self._top_level() and self._is_complete(piece)

    def _push(self, piece):
        """Append ``piece`` on the right, folding it into its parent while it can be."""
        while self._is_complete(piece) and piece.level < self._top_level():
            parent, position = divmod(piece.index, self.split_every)
            last = self._pieces[-1] if self._pieces else None
            if (last is not None and last.level == piece.level + 1 and last.index == parent
                    and last.merged == position):
                self._pieces.pop()
                piece = _Piece(last.level, parent, last.value + piece.value, position + 1)
            elif position == 0:
                piece = _Piece(piece.level + 1, parent, piece.value, 1)
            else:
                break
        self._pieces.append(piece)

    def _is_complete(self, piece):
        return piece.merged == self._children(piece.level, piece.index)

    def _children(self, level, index):
        if level == 0:
            return 1
        below = self._width(level - 1)
        return min(self.split_every, below - index * self.split_every)

    def _width(self, level):
        """Nodes at ``level`` of the tree."""
        width = self.n_leaves
        for _ in range(level):
            width = -(-width // self.split_every)
        return width

    def _top_level(self):
        level, width = 0, self.n_leaves
        while width > 1:
            level, width = level + 1, -(-width // self.split_every)
        return level
