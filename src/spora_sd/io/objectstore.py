"""S3 through obstore (Rust): the store behind remote pixel reads and ``fetch``'s S3 downloads.

spora-sd resolves every remote location to s3fs ``storage_options`` (:mod:`spora_sd.io.location`:
``storage_options``, the rclone remote, the AWS variables). :func:`s3_store` builds an obstore
:class:`~obstore.store.S3Store` from those same options, so both layers reach the same server with
the same credentials, retries and timeouts. Options obstore cannot express make it return ``None``,
and the caller uses s3fs instead. It was chosen by measurement (``docs/design.md``, "Remote
cohorts"): crops through zarr's ``ObjectStore`` over obstore take about two thirds of the time of
zarr's ``FsspecStore`` over s3fs, and fetch downloads several times faster.

:func:`obstore_kind` says what an obstore failure is, in the terms of
:class:`~spora_sd.errors.RemoteAccessError` (obstore raises a few exception types and puts the
HTTP status in the message).

Examples
--------
>>> from upath import UPath
>>> s3_store(UPath("s3://spora/c", key="k", secret="s", client_kwargs={"endpoint_url": "http://127.0.0.1:9"}))
S3Store(bucket="spora", prefix="c")
>>> s3_store(UPath("s3://spora/c", profile="dev")) is None  # a named AWS profile: s3fs reads it
True
>>> obstore_kind(ValueError("x")) is None
True
"""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import timedelta
from typing import Any

from spora_sd.io.location import display_location

__all__ = ["obstore_kind", "s3_store"]

logger = logging.getLogger(__name__)

#: s3fs ``storage_options`` that :func:`s3_store` maps; any other leaves the location to s3fs.
OBSTORE_KEYS = {"key", "secret", "token", "anon", "client_kwargs", "config_kwargs"}
#: fsspec's own options (caches): nothing to map, nothing to refuse.
_FSSPEC_ONLY = {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths", "batch_size"}
#: botocore settings (``config_kwargs``) it maps: retries (attempts), the timeouts, and the
#: connection pool (obstore's own has no fixed limit).
BOTOCORE_KEYS = {"s3", "retries", "connect_timeout", "read_timeout", "max_pool_connections"}

_STORES: dict[str, Any] = {}


def _seconds(value: Any) -> str:
    return f"{max(float(value), 0.001):g}s"


def s3_store(root: Any, *, prefix: str | None = None, request_timeout: bool = True) -> Any:
    """The obstore ``S3Store`` of the ``s3://`` path ``root`` (its bucket; ``prefix`` default: its key), or None.

    None when ``root`` is not S3, its options hold something obstore cannot express, or obstore
    refuses the configuration. ``request_timeout``: each request must finish within the read
    timeout (``config_kwargs.read_timeout``; False for whole-file downloads, which take longer).
    Stores are cached per options, bucket and prefix (making one costs about 20 ms).
    """
    if getattr(root, "protocol", None) not in ("s3", "s3a"):
        return None
    options = {k: v for k, v in dict(getattr(root, "storage_options", {}) or {}).items() if k not in _FSSPEC_ONLY}
    if set(options) - OBSTORE_KEYS:
        return None
    client = dict(options.get("client_kwargs") or {})
    botocore = dict(options.get("config_kwargs") or {})
    s3_config = dict(botocore.get("s3") or {})
    if set(client) - {"endpoint_url", "region_name"} or set(botocore) - BOTOCORE_KEYS:
        return None
    if set(s3_config) - {"addressing_style"}:
        return None
    bucket, _, key = root.path.strip("/").partition("/")
    prefix = key if prefix is None else prefix
    cache_key = json.dumps([options, bucket, prefix, request_timeout], sort_keys=True, default=repr)
    if cache_key in _STORES:
        return _STORES[cache_key]
    try:
        from obstore.store import S3Store
    except ImportError:
        return None
    config: dict[str, Any] = {}
    if options.get("anon"):
        config["skip_signature"] = True
    for ours, theirs in (("key", "access_key_id"), ("secret", "secret_access_key"), ("token", "session_token")):
        if options.get(ours):
            config[theirs] = options[ours]
    endpoint = client.get("endpoint_url")
    if endpoint:
        config["endpoint"] = endpoint
    if client.get("region_name"):
        config["region"] = client["region_name"]
    if s3_config.get("addressing_style") == "virtual":
        config["virtual_hosted_style_request"] = True
    client_options: dict[str, Any] = {}
    if str(endpoint or os.environ.get("AWS_ENDPOINT_URL", "")).startswith("http://"):
        client_options["allow_http"] = True
    if botocore.get("connect_timeout"):
        client_options["connect_timeout"] = _seconds(botocore["connect_timeout"])
    read_timeout = botocore.get("read_timeout")
    if request_timeout and read_timeout:
        client_options["timeout"] = _seconds(read_timeout)
    attempts = (botocore.get("retries") or {}).get("max_attempts")
    if attempts:
        retries = max(int(attempts) - 1, 0)
        # obstore also stops retrying after retry_timeout (3 minutes by default): bound it by what
        # the attempts may take, so that a server that hangs is reported after about as long as s3fs
        per_attempt = float(read_timeout or 30) + float(botocore.get("connect_timeout") or 5)
        config["retry_config"] = {
            "max_retries": retries,
            "backoff": {"init_backoff": timedelta(seconds=0.1), "max_backoff": timedelta(seconds=5), "base": 2.0},
            "retry_timeout": timedelta(seconds=per_attempt * (retries + 1)),
        }
    try:
        store = S3Store(bucket, prefix=prefix or None, client_options=client_options or None, **config)
    except Exception:
        logger.debug("obstore cannot read %s; using s3fs", display_location(root), exc_info=True)
        return None
    _STORES[cache_key] = store
    return store


_HTTP_KIND_RE = re.compile(r"HttpError\s*\{\s*kind:\s*(\w+)")
_STATUS_RE = re.compile(r"\b(?:status(?: code)?:?|returned)\s*(\d{3})\b", re.I)


def obstore_kind(exc: BaseException) -> str | None:
    """What an obstore failure is: ``"missing"``, a :class:`~spora_sd.errors.RemoteAccessError` kind, or None.

    >>> from obstore.exceptions import GenericError
    >>> obstore_kind(GenericError("Server returned non-2xx status code: 503 Service Unavailable: SlowDown"))
    'throttled'
    """
    if not type(exc).__module__.startswith("obstore"):
        return None
    from obstore import exceptions

    if isinstance(exc, exceptions.NotFoundError):
        return "missing"
    if isinstance(exc, exceptions.PermissionDeniedError | exceptions.UnauthenticatedError):
        return "credentials"
    text = str(exc)
    lower = text.lower()
    status = next((int(m.group(1)) for m in _STATUS_RE.finditer(text)), None)
    if status in (401, 403) or "invalidaccesskeyid" in lower or "signaturedoesnotmatch" in lower:
        return "credentials"
    if status == 404 or "nosuchkey" in lower or "nosuchbucket" in lower:
        return "missing"
    if status in (429, 503) or "slowdown" in lower:
        return "throttled"
    if status is not None and status >= 500:
        return "server"
    http_kind = _HTTP_KIND_RE.search(text)  # obstore's debug text: HttpError { kind: Timeout | Connect | ... }
    if http_kind is not None:
        return "timeout" if http_kind.group(1) == "Timeout" else "unreachable"
    if "timed out" in lower:
        return "timeout"
    if any(
        s in lower for s in ("connection refused", "error trying to connect", "connection closed", "sending request")
    ):
        return "unreachable"
    return None
