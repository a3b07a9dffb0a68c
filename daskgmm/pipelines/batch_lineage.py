"""The model lineage of a batch store whose runs update one model (``model.update: online``).

The manifest's ``current_model`` names the head of the lineage. The first run fits a model (or
loads ``model.load``); every later run loads the head from ``models/``, takes one online EM
step with the valid pixels of its new inputs (:meth:`daskgmm.GaussianMixture.partial_fit`,
continuing the head's running statistics and step count, its feature scaling kept), labels its
inputs with the result and makes it the head. Each version's entry under ``models`` names its
``parent`` and the inputs it was fitted on or updated with, and each input's entry the version
that labelled it, so a result is always traced to its model and that model to its ancestors.

The head moves by compare-and-set on the manifest (under the store's lock, or its ETag): a run
whose head was moved meanwhile by another run updates the new head instead, so concurrent runs
still give one line of versions.
"""

import logging

from daskgmm import GaussianMixture, store

from .batch import model_version
from .job_model import Fitted, fit_or_load_drawn, model_summary
from .training import Standardizer, transform

logger = logging.getLogger(__name__)

# How many times a run takes a moved head again before it gives up (runs racing each other).
HEAD_ATTEMPTS = 10


def current_model(manifest):
    """The version at the head of the store's lineage, or None before the first."""
    return manifest.get("current_model")


def updated_model(prepared, batch, names, draw, channels):
    """The model this run applies: the head updated with its pixels, or the lineage's first.

    Parameters
    ----------
    prepared : Prepared
    batch : BatchStore
    names : list of str
        The inputs whose pixels ``draw()`` returns.
    draw : callable
        Returns the (unscaled) pixels to fit on or update with.
    channels : int

    Returns
    -------
    (Fitted, str)
        The model and its version, now the head.
    """
    pixels = None
    for _ in range(HEAD_ATTEMPTS):
        head = current_model(batch.read())
        if head is None:
            fitted = fit_or_load_drawn(prepared, draw)
            pixels, origin = fitted.rows, {"parent": None, "fitted_on": names}
        else:
            pixels = draw() if pixels is None else pixels
            fitted = _stepped(prepared, batch, head, pixels)
            origin = {"parent": head, "updated_with": names}
        version = _saved(prepared, batch, fitted)
        entry = {**origin, "online_steps": int(getattr(fitted.model, "online_steps_", 0)),
                 "model": model_summary(fitted.model)}
        if batch.change(lambda manifest: _advance(manifest, batch, head, version, entry,
                                                  channels)):
            logger.info("model version %s (%s)", version, "the lineage's first" if head is None
                        else f"{head} updated with {len(names)} input(s)")
            return fitted, version
        logger.info("the store's current model moved while this run updated %s; again", head)
    raise RuntimeError("the store's current model kept moving as other runs updated it; run "
                       "again")


def _stepped(prepared, batch, head, pixels):
    """The head model after one online step with ``pixels`` (in its own feature scaling)."""
    path = batch.path(batch.model_name(head))
    model = GaussianMixture.load(path)
    scaler = Standardizer.from_attrs(store.read_attrs(path).get("preprocessing"))
    config = prepared.config.model
    model.set_params(learning_decay=config.learning_decay,
                     learning_offset=config.learning_offset)
    model.partial_fit(transform(scaler, pixels))
    return Fitted(model, scaler, pixels)


def _saved(prepared, batch, fitted):
    scaling = None if fitted.scaler is None else fitted.scaler.to_attrs()
    version = model_version(fitted.model, scaling)
    batch.save_model(version, fitted.model, scaling, prepared.guard)
    return version


def _advance(manifest, batch, head, version, entry, channels):
    """Make ``version`` the head if ``head`` still is; whether it did."""
    if current_model(manifest) != head:
        return False
    batch.add_model(manifest, version, entry, channels)
    manifest["current_model"] = version
    return True
