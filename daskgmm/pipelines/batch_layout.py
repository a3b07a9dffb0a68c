"""The layout of a batch store: the names of its entries, the kinds of its own folders.

What each entry holds is described with the store, in :mod:`.batch`.
"""

import os
from contextlib import suppress
from pathlib import Path

from daskgmm import atomic
from daskgmm.ownership import MARKER, read_marker, remove_owned

MANIFEST, RUNS, LOCK, RESULTS, MODELS = "manifest.json", "runs.jsonl", "lock", "results", "models"
STAGING = ".staging"
LAYOUT = frozenset({MARKER, MANIFEST, RUNS, LOCK, RESULTS, MODELS, STAGING})
STORE_KIND, RESULT_KIND = "batch-store", "batch-result"  # kinds of the store's own folders


def read_text(path):
    """Return the text of one of the store's files, or None when there is none (yet or now)."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def lay_out(root, staging):
    """Create the store's staging folder and its ownership marker, if a run has not yet.

    The marker is written in ``staging`` and linked into place, so that a store is never seen
    with a half-written marker, and two runs laying it out at once both succeed.
    """
    staging.mkdir(parents=True, exist_ok=True)
    if read_marker(root) is None:
        folder = atomic.new_staging(staging, STORE_KIND, root.name)
        with suppress(FileExistsError):  # another run marked it first
            os.link(folder / MARKER, root / MARKER)
        remove_owned(folder)
