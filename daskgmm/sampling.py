"""Rows drawn from a fitted mixture, as scikit-learn's ``BaseMixture.sample`` draws them."""

import numpy as np

from .validation import as_random_state


def draw_rows(mixture, n_samples):
    """Draw ``n_samples`` rows from a fitted mixture (its ``weights_``, ``means_`` and
    ``covariances_``); return them and the component of each.

    The draws are scikit-learn's, so equal models and seeds give equal rows.
    """
    if n_samples < 1:
        raise ValueError(
            f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least "
            "one sample."
        )
    rng = as_random_state(mixture.random_state)
    counts = rng.multinomial(n_samples, mixture.weights_)
    covariances = np.asarray(mixture.covariances_, dtype=np.float64)
    parts = [_component_rows(mixture, rng, k, int(count), covariances)
             for k, count in enumerate(counts)]
    labels = np.repeat(np.arange(mixture.n_components), counts)
    return np.vstack(parts).astype(np.float64), labels


def _component_rows(mixture, rng, k, count, covariances):
    mean = np.asarray(mixture.means_[k], dtype=np.float64)
    if mixture.covariance_type == "full":
        return rng.multivariate_normal(mean, covariances[k], count)
    if mixture.covariance_type == "tied":
        return rng.multivariate_normal(mean, covariances, count)
    return mean + rng.standard_normal(size=(count, len(mean))) * np.sqrt(covariances[k])
