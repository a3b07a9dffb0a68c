"""The one check on every path a job creates, replaces or deletes.

A :class:`Guard` knows a job's inputs and the paths it has already cleared. Before the first
byte is written to a path (or a folder is replaced or deleted), :meth:`Guard.check` proves that

- no folder on the way to it is a file;
- it neither is, holds nor sits inside an input (the job never writes where it reads);
- it neither holds nor sits inside another path the job writes, unless it is meant to;
- if it exists and is to be replaced or deleted, daskgmm made it as a folder of that kind (its
  :mod:`ownership marker <daskgmm.ownership>` says so) and it holds nothing else.

A refusal is a :class:`~daskgmm.config.ConfigError` naming the config key, the path and what
was found there, which the job runner reports with exit status 2.
"""

import glob
import itertools
import os
from pathlib import Path

from . import object_output, object_record
from .schema import ConfigError
from .ownership import foreign_entries, remove_owned
from .storage import is_url

# Foreign entries named in a refusal; the rest are counted.
SHOWN_ENTRIES = 5


def real_path(path):
    """The absolute path with links and ``..`` resolved (``nonexist/../out`` is ``out``)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def glob_root(pattern):
    """The folder a glob searches: its parts up to the first one with a wildcard, normalised."""
    parts = Path(os.path.normpath(pattern)).parts
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
    return Path(*fixed) if fixed else Path(".")


def _overlaps(path, other):
    return path == other or other in path.parents or path in other.parents


def url_root(url):
    """A URL without its trailing slash, or a URL glob's prefix up to its first wildcard."""
    parts = str(url).rstrip("/").split("/")
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
    return "/".join(fixed)


def _urls_overlap(url, other):
    return url == other or url.startswith(other + "/") or other.startswith(url + "/")


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _shown(found):
    shown = ", ".join(found[:SHOWN_ENTRIES])
    more = len(found) - SHOWN_ENTRIES
    return shown + (f" and {more} more" if more > 0 else "")


class Guard:
    """The paths a job reads, and the paths it has been cleared to write.

    Parameters
    ----------
    inputs : dict of str to str
        Config key to path (a file, folder, Zarr store or glob) of everything the job reads;
        None is skipped.
    """

    def __init__(self, inputs=None):
        self.inputs = {}
        self.url_inputs = {}
        for key, path in (inputs or {}).items():
            if path and is_url(path):
                self.url_inputs[key] = url_root(path)
            elif path:
                self.inputs[key] = self._input_paths(path)
        self.targets = {}

    @staticmethod
    def _input_paths(path):
        """An input's real root and paths: itself, or a glob's root and its matches now."""
        if not glob.has_magic(str(path)):
            return real_path(path), [real_path(path)], False
        matches = [real_path(p) for p in glob.glob(str(path), recursive=True)]
        return real_path(glob_root(path)), matches, "**" in str(path)

    def check(self, path, key, kind, replace=False, empty_ok=False, within=None,
              fix="choose another path", grows=False):
        """Clear ``path`` for writing; return its real path (links resolved), to write to.

        Parameters
        ----------
        path : str or Path
        key : str
            The config key the path comes from, for messages.
        kind : str
            What daskgmm keeps there (``output``, ``checkpoint``, ``ingest``, ...); an existing
            folder is replaced only if its marker names this kind.
        replace : bool, default=False
            Whether an existing folder at ``path`` may be replaced (else it is refused).
        empty_ok : bool, default=False
            Whether an existing empty folder may be replaced although no marker is in it.
        within : Path, optional
            A path already cleared that ``path`` is part of (a batch store's result).
        fix : str
            What to do when ``path`` exists and ``replace`` is False.
        grows : bool, default=False
            ``path`` is a store that the job adds to and never replaces (a batch store): an
            existing one is accepted here, and its owner checks what it holds.

        Raises
        ------
        ConfigError
            If any rule of this module is broken.
        """
        if is_url(path):
            return self._check_url(str(path), key, kind, replace, fix, within, grows)
        real = real_path(path)
        if within is not None and within not in real.parents:
            raise ConfigError(f"{path} would be outside {within}, where it belongs", key)
        self._check_parents(real, path, key)
        self._check_inputs(real, path, key)
        self._check_targets(real, path, key, within)
        if os.path.lexists(real) and not grows:
            if not replace:
                raise ConfigError(f"{path} exists; {fix}", key)
            self._check_owned(real, path, key, kind, empty_ok)
        self.targets[real] = key
        return real

    def remove(self, path, key, kind):
        """Delete the ``kind`` folder at ``path`` (if any) after checking it is wholly daskgmm's.

        Raises
        ------
        ConfigError
            If it holds anything daskgmm did not put there, or overlaps an input.
        """
        real = self.check(path, key, kind, replace=True)
        if is_url(real):
            if object_record.relative_keys(real):
                object_output.remove(real, kind, key)
        elif os.path.lexists(real):
            remove_owned(real)

    def _check_url(self, url, key, kind, replace, fix, within=None, grows=False):
        """:meth:`check` of a folder in object storage (see :mod:`daskgmm.object_output`)."""
        url = url_root(url)
        if within is not None and not url.startswith(url_root(within) + "/"):
            raise ConfigError(f"{url} would be outside {within}, where it belongs", key)
        for input_key, root in self.url_inputs.items():
            if _urls_overlap(url, root):
                raise ConfigError(f"{url} overlaps {input_key} ({root}); a job never writes "
                                  "where it reads: choose a path outside the inputs", key)
        for target, target_key in self.targets.items():
            inside = within is not None and (within == target or
                                             url_root(within).startswith(target + "/"))
            if isinstance(target, str) and _urls_overlap(url, target) and not inside and \
                    not (target == url and target_key == key):
                raise ConfigError(f"{url} overlaps {target_key} ({target}), which this job "
                                  "also writes; give them separate paths", key)
        keys = [] if grows else object_record.relative_keys(url)  # a store checks itself
        if object_record.holds_output(url, keys):
            if not replace:
                raise ConfigError(f"{url} exists; {fix}", key)
            found = object_record.foreign_objects(url, kind, keys)
            if found:
                shown = [f"{url}/{name}" if name else f"{url} (an object)" for name in found]
                raise ConfigError(f"{url} is not {_article(kind)} {kind} folder that daskgmm "
                                  f"wrote, or holds more than daskgmm wrote there (found: "
                                  f"{_shown(shown)}); it is neither replaced nor deleted. Move "
                                  "those objects away or choose another path", key)
        self.targets[url] = key
        return url

    @staticmethod
    def _check_parents(real, path, key):
        for parent in real.parents:
            if parent.exists() and not parent.is_dir():
                raise ConfigError(f"{path} would be inside {parent}, which is a file; choose a "
                                  "path in a folder", key)

    def _check_inputs(self, real, path, key):
        for input_key, (root, matches, recursive) in self.inputs.items():
            hit = next((match for match in matches if _overlaps(real, match)), None)
            # A glob's root holding the path would be read by a later run (recursive globs).
            if hit is None and (real == root or real in root.parents
                                or (recursive and root in real.parents)):
                hit = root
            if hit is not None:
                raise ConfigError(f"{path} overlaps {input_key} ({hit}); a job never writes "
                                  "where it reads: choose a path outside the inputs", key)

    def _check_targets(self, real, path, key, within):
        for target, target_key in self.targets.items():
            if isinstance(target, str):
                continue  # a URL: never on the local disk
            if (target == real and target_key == key) or (within is not None and (target == within
                                                          or target in within.parents)):
                continue
            if _overlaps(real, target):
                raise ConfigError(f"{path} overlaps {target_key} ({target}), which this job "
                                  "also writes; give them separate paths", key)

    @staticmethod
    def _check_owned(real, path, key, kind, empty_ok):
        if empty_ok and real.is_dir() and not real.is_symlink() and not any(real.iterdir()):
            return
        found = foreign_entries(real, kind)
        if found:
            raise ConfigError(f"{path} is not {_article(kind)} {kind} folder that daskgmm wrote, "
                              f"or holds more than daskgmm wrote there (found: {_shown(found)}); "
                              "it is "
                              "neither replaced nor deleted. Move those entries away or choose "
                              "another path", key)

