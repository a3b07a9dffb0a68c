"""The design features of a row, in which the Gaussian log-density is linear.

``phi(x) = (1, x - c, quadratic terms of x - c)``, where the quadratic terms are the upper
triangle of ``(x - c)(x - c)^T`` ('full', 'tied'), the squares ``(x - c)^2`` ('diag') or the
squared norm ``|x - c|^2`` ('spherical'). So, for a slice of rows laid out feature-major:

* the E-step's weighted log-probabilities of all components are one matrix product
  ``coefficients @ phi`` (K x n), and
* every sufficient statistic (counts, first and second moments) is one matrix product
  ``phi @ responsibilities^T``.

The reference ``c`` is the current mixture mean, chosen before the pass, so data far from the
origin do not lose precision to cancellation. Pure NumPy.
"""

import numpy as np


def n_design_features(covariance_type, n_features):
    """Return the number of rows of the design matrix: 1 + D + quadratic terms."""
    quadratic = {
        "full": n_features * (n_features + 1) // 2,
        "tied": n_features * (n_features + 1) // 2,
        "diag": n_features,
        "spherical": 1,
    }[covariance_type]
    return 1 + n_features + quadratic


def design_matrix(rows, reference, covariance_type, out):
    """Fill ``out`` with ``phi`` of a slice of rows, feature-major (n_design_features, n_rows)."""
    n_features = rows.shape[1]
    phi = out
    phi[0] = 1.0
    centred = phi[1 : 1 + n_features]
    np.subtract(rows.T, reference[:, None], out=centred, casting="unsafe")
    quadratic = phi[1 + n_features :]
    if covariance_type in ("full", "tied"):
        offset = 0
        for i in range(n_features):
            width = n_features - i
            np.multiply(centred[i], centred[i:], out=quadratic[offset : offset + width])
            offset += width
    elif covariance_type == "diag":
        np.multiply(centred, centred, out=quadratic)
    else:
        np.einsum("dn,dn->n", centred, centred, out=quadratic[0])
    return phi


def quadratic_coefficients(precisions, covariance_type):
    """Coefficients of the quadratic design features in ``-0.5 (x-c)^T P (x-c)``, shape (K, Q)."""
    if covariance_type in ("full", "tied"):
        n_features = precisions.shape[-1]
        upper_rows, upper_cols = np.triu_indices(n_features)
        doubled = np.where(upper_rows == upper_cols, 0.5, 1.0)
        return -precisions[..., upper_rows, upper_cols] * doubled
    if covariance_type == "diag":
        return -0.5 * precisions
    return -0.5 * precisions[:, None]
