"""predict: apply a saved model (``model.load``, required) to a table of rows.

The same job as :mod:`fit` without the fitting: labels (and probabilities, log-likelihoods)
for every row, and a copy of the model applied, in the output folder.
"""

from .fit import prepare, run

__all__ = ["prepare", "run"]
