"""Keeping the ``k`` lowest of scored items, in a stable order: ties keep the earlier item.

The one home of "keep the k lowest" for the worst-explained rows of the E-step and the weighted
row samples of the initialisation. Pure NumPy.
"""

import numpy as np

# Sorting this many scores or fewer costs less than selecting the lowest first.
_SORT_AT_MOST = 64
# Every this-many-th score gives a bound on the lowest ones (see _candidates).
_STRIDE = 16


def lowest(scores, keep):
    """Return the indices of the ``keep`` lowest ``scores``, lowest first.

    Ties, and NaN (after every number), keep index order: the result is
    ``np.argsort(scores, kind="stable")[:keep]``, found without sorting every score.
    """
    scores = np.asarray(scores)
    if keep <= 0:
        return np.empty(0, dtype=np.intp)
    candidates = _candidates(scores, keep)
    if candidates is None:
        return _lowest_of(scores, keep)
    return candidates[_lowest_of(scores[candidates], keep)]


def _candidates(scores, keep):
    """The indices, in order, of the scores at most the ``keep``-th lowest of every
    ``stride``-th score (``stride`` up to ``_STRIDE``, with at least ``4 keep`` of those), if
    they are at most half the scores, else None.

    That score is at least the ``keep``-th lowest of all, so the candidates hold the ``keep``
    lowest and their ties: for scores in random order about ``stride * keep`` of them, found
    for one comparison per score and a partition of ``1 / stride`` of them.
    """
    stride = min(_STRIDE, len(scores) // (4 * keep))
    if stride < 2:
        return None
    kth = np.partition(scores[::stride], keep - 1)[keep - 1]
    if np.isnan(kth):
        return None
    candidates = np.flatnonzero(scores <= kth)
    return candidates if 2 * len(candidates) <= len(scores) else None


def _lowest_of(scores, keep):
    if len(scores) <= max(keep, _SORT_AT_MOST):
        return np.argsort(scores, kind="stable")[:keep]
    kth = scores[np.argpartition(scores, keep - 1)[keep - 1]]
    if np.isnan(kth):
        nan = np.isnan(scores)
        chosen = np.concatenate([np.flatnonzero(~nan), np.flatnonzero(nan)])[:keep]
    else:
        chosen = np.flatnonzero(scores <= kth)
        if len(chosen) > keep:
            # Ties with the keep-th lowest: the earliest of them fill the places left.
            tied = scores[chosen] == kth
            places = keep - np.count_nonzero(~tied)
            chosen = chosen[~tied | (np.cumsum(tied) <= places)]
    return chosen[np.argsort(scores[chosen], kind="stable")]


def merge_lowest(left, right, keep):
    """Merge two ``(scores, items)`` sets, keeping the ``keep`` lowest scores (stable order:
    ties keep ``left``'s first)."""
    if len(left[0]) == 0:
        return right
    if len(right[0]) == 0:
        return left
    scores = np.concatenate([left[0], right[0]])
    items = np.concatenate([left[1], right[1]])
    order = lowest(scores, keep)
    return scores[order], items[order]


class LowestRows:
    """The ``keep`` rows of a block with the lowest ``log p(x)``, found slice by slice.

    Only rows below the current ``keep``-th lowest score are looked at again, so after the
    first slice a slice costs one comparison per row, not a partition of the whole block.
    Ties keep the earlier row.
    """

    def __init__(self, keep):
        self.keep = keep
        self.scores = np.empty(0)
        self.indices = np.empty(0, dtype=np.intp)

    def add(self, log_norm, start):
        """Consider the rows ``start, start + 1, ...`` with scores ``log_norm``."""
        if self.keep == 0:
            return
        if len(self.scores) == self.keep:
            candidates = np.flatnonzero(log_norm < self.scores[-1])
        else:
            candidates = np.arange(len(log_norm))
        if len(candidates) == 0:
            return
        chosen = candidates[lowest(log_norm[candidates], self.keep)]
        self.scores, self.indices = merge_lowest(
            (self.scores, self.indices),
            (log_norm[chosen].astype(np.float64), chosen + start),
            self.keep,
        )

    def attach(self, stats, block):
        """Set ``stats.worst_scores`` and ``stats.worst_points`` (float64 rows of ``block``)."""
        stats.worst_scores = self.scores
        stats.worst_points = np.asarray(block[self.indices], dtype=np.float64).reshape(
            len(self.indices), block.shape[1])
        return stats
