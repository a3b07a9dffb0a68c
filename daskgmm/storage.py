"""Object-store URLs: the options a job gives fsspec for each scheme, and what a refusal says.

A job's paths may be fsspec URLs (``s3://bucket/key``, ``gs://``, ``az://``). The config's
``storage`` section holds per-scheme options (an endpoint, a region, anonymous access, a profile),
never secrets: credentials come from the standard environment variables, credential files and
workload identities that each filesystem reads itself, so no secret is written into a job file,
a log or a task graph. The runner makes the section current (:func:`using`) while the job runs;
readers take the options for a URL from :func:`storage_options`. Zarr stores opened with them
carry their filesystem to the workers, which resolve their own credentials.
"""

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from .schema import ConfigError, Section, option, shown

# Keys that would hold a secret; refused in the job file, with where to put them instead.
SECRET_KEYS = ("key", "secret", "token", "password", "secret_access_key", "access_key_id",
               "session_token", "account_key", "sas_token", "connection_string", "credentials")
# Where each scheme's filesystem looks for credentials (named in refusals).
CREDENTIAL_SOURCES = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or a "
          "workload identity (IRSA)",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS, gcloud's default credentials or workload identity",
    "az": "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or a managed identity",
}
# The schemes of each filesystem, as fsspec registers them.
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "az", "abfs": "az",
           "abfss": "az"}
# Attempts of a read that fails on a transient error (botocore backs off between them).
S3_READ_ATTEMPTS = 10


def is_url(path):
    """Whether ``path`` is an fsspec URL (``s3://...``) rather than a local path."""
    return "://" in str(path)


def scheme_of(url):
    """The filesystem a URL names: ``"s3"``, ``"gcs"``, ``"az"``, or its own scheme."""
    scheme = str(url).split("://", 1)[0].lower()
    return SCHEMES.get(scheme, scheme)


@dataclass
class SchemeOptions(Section):
    """Options of one filesystem; a secret among them is refused, naming where it belongs."""

    @classmethod
    def from_dict(cls, data, key=""):
        for name in data or {}:
            if str(name).lower() in SECRET_KEYS:
                scheme = key.rsplit(".", 1)[-1]
                raise ConfigError(
                    "secrets are never read from the job file; remove it and give the "
                    f"credentials through {CREDENTIAL_SOURCES[scheme]}", f"{key}.{name}")
        return super().from_dict(data, key)

    def fsspec_options(self):
        """The keyword arguments of the fsspec filesystem."""
        raise NotImplementedError


@dataclass
class S3Options(SchemeOptions):
    """``storage.s3``: Amazon S3 and S3-compatible servers (MinIO, Ceph, moto), through s3fs."""

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    profile: str | None = None

    def fsspec_options(self):
        client = {"region_name": self.region} if self.region else {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        options = {"anon": self.anon, "client_kwargs": client,
                   "config_kwargs": {"retries": {"mode": "adaptive",
                                                 "max_attempts": S3_READ_ATTEMPTS}}}
        if self.profile:
            options["profile"] = self.profile
        return options


@dataclass
class GCSOptions(SchemeOptions):
    """``storage.gcs``: Google Cloud Storage, through gcsfs."""

    endpoint_url: str | None = None
    project: str | None = None
    anon: bool = False

    def fsspec_options(self):
        options = {"token": "anon"} if self.anon else {}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.project:
            options["project"] = self.project
        return options


@dataclass
class AzureOptions(SchemeOptions):
    """``storage.az``: Azure Blob Storage and Data Lake, through adlfs."""

    account_name: str | None = None
    anon: bool = False

    def fsspec_options(self):
        options = {"anon": self.anon}
        if self.account_name:
            options["account_name"] = self.account_name
        return options


@dataclass
class StorageConfig(Section):
    """The job's ``storage`` section: options per filesystem, for every URL of the job."""

    s3: S3Options = option(S3Options)
    gcs: GCSOptions = option(GCSOptions)
    az: AzureOptions = option(AzureOptions)


_CURRENT = ContextVar("daskgmm_storage", default=None)


@contextmanager
def using(config):
    """Make a ``storage`` section (:class:`StorageConfig`) the one :func:`storage_options`
    answers from, until the block ends."""
    token = _CURRENT.set(config)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def storage_options(url):
    """The fsspec options for ``url``: the current ``storage`` section's for its scheme.

    Without a current section (outside a job), an empty dict: the filesystem's own defaults and
    environment (e.g. ``AWS_ENDPOINT_URL``) apply.
    """
    config = _CURRENT.get()
    if config is None:
        return {}
    section = {"s3": config.s3, "gcs": config.gcs, "az": config.az}.get(scheme_of(url))
    return section.fsspec_options() if section is not None else {}


def url_options(path, options=None):
    """Keyword arguments for a reader of ``path`` (``zarr.open*``, ``dd.read_csv``...): its
    ``storage_options`` if it is a URL (``options`` when given), none for a local path."""
    if not is_url(path):
        return {}
    return {"storage_options": storage_options(path) if options is None else options}


def credentials_found(url):
    """A line naming the credentials the filesystem of ``url`` would use, for refusals and the
    dry run; what it cannot tell, it says."""
    scheme = scheme_of(url)
    if scheme == "s3":
        config = _CURRENT.get()
        if config is not None and config.s3.anon:
            return "anonymous access (storage.s3.anon)"
        try:
            import botocore.session
        except ImportError:
            return "none: s3fs is not installed (pip install 'daskgmm[s3]')"
        profile = config.s3.profile if config is not None else None
        credentials = botocore.session.Session(profile=profile).get_credentials()
        if credentials is None:
            return f"none found; give them through {CREDENTIAL_SOURCES['s3']}"
        return f"found by botocore ({credentials.method})"
    return f"resolved by the {scheme} filesystem ({CREDENTIAL_SOURCES.get(scheme, 'its own')})"


def access_denied(url, error, action="read"):
    """The message of a read (or another ``action``) refused by the store at ``url``."""
    return (f"access to {url!r} was denied ({error}); credentials: {credentials_found(url)}; "
            f"give credentials that may {action} it, or fix the bucket's policy")


@contextmanager
def naming(url, missing=None):
    """Within the block, a refused read of ``url`` is a PermissionError saying so
    (:func:`access_denied`), and a missing one a FileNotFoundError of ``missing`` (if given)."""
    try:
        yield
    except PermissionError as error:
        raise PermissionError(access_denied(url, error)) from None
    except FileNotFoundError:
        if missing is None:
            raise
        raise FileNotFoundError(missing) from None


def check_url(value, key):
    """Refuse a URL whose scheme no installed fsspec filesystem serves, naming the extra."""
    if not is_url(value):
        return
    import fsspec

    scheme = str(value).split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(scheme)
    except (ValueError, ImportError) as error:
        extra = {"s3": "s3", "gcs": "gcs", "az": "azure"}.get(scheme_of(value))
        fix = f"pip install 'daskgmm[{extra}]'" if extra else "install its fsspec filesystem"
        raise ConfigError(f"{shown(value)} needs the {scheme}:// filesystem ({error}); {fix}",
                          key) from None


# ------------------------------------------------------------------ files behind URLs


def filesystem(url, options=None):
    """The fsspec filesystem of ``url`` and the path within it, with its storage options.

    fsspec shares one filesystem per set of options in a process, listings cached: what lists
    (:func:`listing`, :func:`exists`, :func:`files_under`, :func:`identity`) drops them first,
    so a batch sees the objects added since it last listed them.
    """
    import fsspec

    return fsspec.core.url_to_fs(str(url), **(storage_options(url) if options is None
                                              else options))


def _listable(url):
    """:func:`filesystem` with its cached listings dropped, for a listing that must be new."""
    fs, inner = filesystem(url)
    fs.invalidate_cache()
    return fs, inner


def _urls(url, names):
    """Paths the filesystem of ``url`` gave back, as URLs of its scheme."""
    protocol = str(url).split("://", 1)[0]
    return [f"{protocol}://{name}" for name in sorted(names)]


def open_file(path, options=None):
    """Open a local file or a URL (with ``options``, or the current section's) for reading
    bytes; a missing object is a FileNotFoundError and a refusal a PermissionError naming it."""
    if not is_url(path):
        return open(path, "rb")
    fs, inner = filesystem(path, options)
    with naming(path):
        return fs.open(inner, "rb")


def listing(pattern):
    """The URLs a URL glob matches, or the entries of a URL folder (None if it is neither)."""
    fs, inner = _listable(pattern)
    if any(character in inner for character in "*?["):
        return _urls(pattern, fs.glob(inner))
    if fs.isdir(inner):
        return _urls(pattern, fs.ls(inner, detail=False))
    return None


def exists(url):
    """Whether an object or prefix exists at ``url``."""
    fs, inner = _listable(url)
    return fs.exists(inner)


def file_signature(path):
    """What changes when a file is rewritten: its path, size and modification time (an
    object's ETag in a bucket)."""
    if not is_url(path):
        status = Path(path).stat()
        return [str(Path(path).resolve()), status.st_size, status.st_mtime_ns]
    fs, inner = filesystem(path)
    info = fs.info(inner)
    return [str(path), info.get("size"), str(info.get("ETag") or info.get("mtime") or "")]


def join(base, name):
    """``base/name`` for a local path or a URL (``Path`` would turn ``s3://`` into ``s3:/``)."""
    if not is_url(base):
        return str(Path(base) / name)
    return f"{str(base).rstrip('/')}/{name}"


def sibling(path, suffix):
    """The path beside ``path`` whose name adds ``suffix`` (``out`` -> ``out.checkpoint``), for
    a local path or a URL."""
    return (str(path).rstrip("/") if is_url(path) else str(Path(path))) + suffix


def files_under(url):
    """The URLs of every object under the prefix ``url`` (or ``url`` itself if it is one)."""
    fs, inner = _listable(url)
    return _urls(url, fs.find(inner))


def identity(url, kind, block=1 << 20):
    """An input's identity in a bucket: its objects' total size and ETags (``stat``; an ETag
    changes with every rewrite), or a SHA-256 of their relative names and bytes (``content``).
    """
    import hashlib

    fs, inner = _listable(url)
    found = fs.find(inner, detail=True)
    digest = hashlib.sha256()
    for name in sorted(found):
        relative = name[len(inner):].lstrip("/")
        if kind == "content":
            digest.update(relative.encode() + b"\0")
            with fs.open(name, "rb") as stream:
                for piece in iter(lambda: stream.read(block), b""):
                    digest.update(piece)
        else:
            digest.update(f"{relative}\0{found[name].get('ETag')}\0".encode())
    if kind == "content":
        return {"sha256": digest.hexdigest()}
    return {"size": sum(info.get("size") or 0 for info in found.values()),
            "etags": digest.hexdigest()}
