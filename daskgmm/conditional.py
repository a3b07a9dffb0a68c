"""Small JSON objects in a bucket, replaced only if no one else replaced them first.

An object store's one atomic step is a conditional PUT: ``If-None-Match: *`` creates an object
only if there is none, ``If-Match: <ETag>`` replaces it only if it is still the version that was
read. The commit of an output in a bucket (:mod:`daskgmm.object_output`) is built on these two.
They are S3's (AWS since 2024, MinIO, Ceph, moto); :data:`SCHEMES` lists what is supported.
"""

import json
import uuid

from .storage import filesystem, naming, scheme_of

SCHEMES = ("s3",)


class Conflict(Exception):
    """Another writer replaced (or created) the object since it was read."""


def supports(url):
    """Whether conditional writes are implemented for the scheme of ``url``."""
    return scheme_of(url) in SCHEMES


def read(url, options=None):
    """Return ``(document, etag)`` of the JSON object at ``url`` (read with the fsspec
    ``options``, or the job's); ``(None, None)`` if there is none. The ETag is the one of the
    bytes returned (the object is read again if it changed in between)."""
    fs, inner = filesystem(url, options)
    while True:
        with naming(url):
            try:
                before = fs.info(inner, refresh=True).get("ETag")
                body = fs.cat_file(inner)
                after = fs.info(inner, refresh=True).get("ETag")
            except FileNotFoundError:
                return None, None
        if before == after:
            return json.loads(body), after


def write(url, document, etag):
    """Write ``document`` at ``url`` only if the object there is still ``etag`` (None: only if
    there is no object); return the new ETag.

    Each body carries a fresh ``revision``, so two writes of the same document differ in ETag.

    Raises
    ------
    Conflict
        If the precondition failed: another writer came first.
    """
    fs, inner = filesystem(url)
    body = json.dumps({**document, "revision": uuid.uuid4().hex}, sort_keys=True).encode()
    condition = {"mode": "create"} if etag is None else {"IfMatch": etag}
    with naming(url):
        try:
            response = fs.pipe_file(inner, body, **condition)
        except FileExistsError:
            raise Conflict(url) from None
        except OSError as error:
            if _is_precondition_failure(error):
                raise Conflict(url) from None
            raise
    fs.invalidate_cache(inner)
    return response["ETag"]


def _is_precondition_failure(error):
    """Whether s3fs's error is S3's 412 Precondition Failed (s3fs maps it to EINVAL)."""
    cause = error.__cause__ or error.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or \
        "Precondition" in str(error)
