"""Squared distances from rows to a few centres, and each row's nearest centre.

Pure NumPy. Distances are taken about a reference point near the data (by default the
centres' mean): ``|x - c|^2 = |x - r|^2 + s(x, c)`` with the score
``s = |c - r|^2 - 2 (x - r).(c - r)``, so data far from the origin keep their precision. The
score alone ranks the centres for a row, so finding the nearest centre never needs
``|x - r|^2``. Everything is in the rows' own float dtype (float32 rows stay float32), in
per-thread buffers (:func:`daskgmm.slices.thread_scratch`).
"""

from dataclasses import dataclass

import numpy as np

from .slices import thread_scratch


@dataclass(frozen=True)
class CenterTerms:
    """Centres as scores need them: about a reference point, in one float dtype."""

    reference: np.ndarray
    minus_twice_shifted: np.ndarray
    squared_norms: np.ndarray

    @classmethod
    def of(cls, centers, dtype, reference=None):
        """The terms of ``centers`` (shape (n_centers, n_features)) in ``dtype``, about
        ``reference`` (by default the centres' mean)."""
        centers = np.asarray(centers, dtype=np.float64)
        reference = centers.mean(axis=0) if reference is None else np.asarray(reference,
                                                                             np.float64)
        shifted = centers - reference
        squared_norms = np.einsum("kd,kd->k", shifted, shifted)
        return cls(reference.astype(dtype), (-2.0 * shifted).astype(dtype),
                   squared_norms.astype(dtype))

    @property
    def n_centers(self):
        return len(self.squared_norms)


def centred_rows(rows, reference):
    """``(rows - reference)^T``, feature-major (n_features, n), in a per-thread buffer."""
    centred = thread_scratch("distances-centred", (rows.shape[1], len(rows)), reference.dtype)
    return np.subtract(rows.T, reference[:, None], out=centred)


def center_scores(centred, terms):
    """The scores ``s(x, c)`` (squared distances less ``|x - r|^2``), shape (n_centers, n),
    of rows given as ``centred_rows`` about ``terms.reference``, in a per-thread buffer."""
    scores = thread_scratch("distances-scores", (terms.n_centers, centred.shape[1]),
                            terms.squared_norms.dtype)
    np.matmul(terms.minus_twice_shifted, centred, out=scores)
    scores += terms.squared_norms[:, None]
    return scores


def row_norms(centred):
    """``|x - r|^2`` of every row given as ``centred_rows``."""
    return np.einsum("dn,dn->n", centred, centred)


def squared_distances(rows, terms):
    """Squared distances of ``rows`` (n, D) to the centres, shape (n_centers, n), in a
    per-thread buffer valid until this thread asks for distances again."""
    centred = centred_rows(rows, terms.reference)
    distances = center_scores(centred, terms)
    distances += row_norms(centred)
    return np.maximum(distances, 0.0, out=distances)


def nearest(scores):
    """Return each column's smallest row and its value, ``(labels, closest)``: the nearest
    centre of each row and its score (or distance). Ties go to the first centre, as
    ``argmin`` would, for a fraction of ``argmin``'s cost along a short axis. A column holding
    NaN gets label 0 and NaN.
    """
    closest = scores.min(axis=0)
    labels = np.zeros(scores.shape[1], dtype=np.intp)
    for k in range(len(scores) - 1, -1, -1):  # the lowest tied row is written last
        np.putmask(labels, scores[k] == closest, k)
    return labels, closest


def nearest_one_hot(scores, out):
    """Write ``out[k, i] = 1`` if centre ``k`` is row ``i``'s nearest (ties: the first), else 0.

    Without ties (the rule for continuous data) the row minima mark exactly one centre per
    row, one comparison per score; with any, :func:`nearest` decides.
    """
    hits = thread_scratch("distances-hits", scores.shape, np.bool_)
    np.equal(scores, scores.min(axis=0), out=hits)
    if np.count_nonzero(hits) == scores.shape[1]:
        out[:] = hits
    else:
        np.equal(np.arange(len(scores))[:, None], nearest(scores)[0], out=out, casting="unsafe")
