"""Where a cohort lives: local folders, ``s3://`` and ``http(s)://`` URLs, and rclone remotes.

:func:`resolve_location` turns what a user typed into a path object that the readers can use:

- a local folder stays a :class:`pathlib.Path` (nothing changes for local cohorts);
- ``s3://bucket/prefix/<dataset>``, ``https://host/.../<dataset>`` and an rclone location
  ``remote:bucket/prefix/<dataset>`` become a :class:`upath.UPath` over an fsspec filesystem
  (s3fs, or fsspec's HTTP filesystem), carrying the resolved ``storage_options``.

Credentials come, in this order of precedence, from the ``storage_options`` argument, the rclone
remote's section of ``rclone.conf`` (for ``remote:path`` locations), and the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``/``AWS_REGION``), which s3fs/botocore read themselves.

Secrets never leave this module in text: :func:`display_location` and :func:`redact` give what logs,
errors, reprs and ``sdata.attrs`` may show.

>>> resolve_location("/data/jackson2020single").as_posix()
'/data/jackson2020single'
>>> is_remote("s3://spora/jackson2020single"), is_remote("/data/x")
(True, False)
>>> redact("https://alice:s3cr3t@example.org/cohorts/x?X-Amz-Signature=abc&part=1")
'https://***@example.org/cohorts/x?X-Amz-Signature=***&part=1'
"""

from __future__ import annotations

import configparser
import copy
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from spora_sd.errors import InvalidArgumentError

if TYPE_CHECKING:
    import fsspec
    from upath import UPath

__all__ = [
    "REMOTE_PROTOCOLS",
    "accepted_option_keys",
    "as_path",
    "CohortLocation",
    "RcloneRemote",
    "default_storage_options",
    "display_location",
    "filesystem_and_path",
    "child_name",
    "is_remote",
    "limit_retries",
    "parse_location",
    "parse_storage_options",
    "rclone_config_path",
    "rclone_remote",
    "redact",
    "redact_options",
    "resolve_location",
    "tune_filesystem",
]

#: URL schemes a cohort may be read from (besides local paths).
REMOTE_PROTOCOLS: tuple[str, ...] = ("s3", "http", "https")

#: ``storage_options`` keys whose values are secrets (never shown).
_SECRET_KEYS = re.compile(r"(secret|token|password|passwd|key_id|^key$|credential|signature|session)", re.I)
_URL_RE = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://(?P<rest>.*)$")
# rclone's `remote:path` (a remote name is letters, digits, `_`, `-`, `.`, space; not a drive letter)
_RCLONE_RE = re.compile(r"^(?P<remote>[A-Za-z0-9_.\- ]{2,}):(?P<path>(?!//).*)$")
_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_QUERY_SECRET_RE = re.compile(
    r"(?P<key>[?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig|token|access_token)=)[^&\s]*",
    re.I,
)


# -------------------------------------------------------------------------------------------------
# what may be shown
def redact(text: str) -> str:
    """``text`` with URL credentials (``user:pass@``) and signed-URL query secrets replaced by ``***``.

    >>> redact("s3://spora/x")
    's3://spora/x'
    """
    text = _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _QUERY_SECRET_RE.sub(lambda m: f"{m.group('key')}***", text)


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``storage_options`` with every secret value replaced by ``"***"`` (nested too).

    >>> redact_options({"key": "AKIA", "secret": "s", "client_kwargs": {"endpoint_url": "http://h"}})
    {'key': '***', 'secret': '***', 'client_kwargs': {'endpoint_url': 'http://h'}}
    """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            out[key] = redact_options(value)
        elif _SECRET_KEYS.search(str(key)) and value not in (None, False, True, ""):
            out[key] = "***"
        else:
            out[key] = value
    return out


def is_remote(location: object) -> bool:
    """Whether ``location`` (a string, a path or a :class:`upath.UPath`) is read over the network."""
    protocol = getattr(location, "protocol", None)
    if isinstance(protocol, str):
        return protocol not in ("", "file", "local")
    if isinstance(location, str):
        match = _URL_RE.match(location)
        if match:
            return match.group("scheme").lower() in REMOTE_PROTOCOLS
        return _rclone_match(location) is not None
    return False


def display_location(location: object) -> str:
    """How ``location`` is shown to users: its URL or path, without credentials.

    >>> display_location(Path("/data/x"))
    '/data/x'
    """
    if isinstance(location, Path):
        return location.as_posix()
    return redact(str(location))


# -------------------------------------------------------------------------------------------------
# rclone
@dataclass(frozen=True)
class RcloneRemote:
    """An ``s3`` remote read from ``rclone.conf``: its name and the s3fs ``storage_options`` it implies."""

    name: str
    config_file: Path
    storage_options: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        return f"RcloneRemote(name={self.name!r}, config_file={self.config_file.as_posix()!r})"


def rclone_config_path() -> Path:
    """The ``rclone.conf`` that rclone itself would read: ``$RCLONE_CONFIG``, else the XDG default.

    Like rclone, it falls back to the legacy ``~/.rclone.conf`` when that exists and the XDG file
    does not.
    """
    if os.environ.get("RCLONE_CONFIG"):
        return Path(os.environ["RCLONE_CONFIG"]).expanduser()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    default = xdg / "rclone" / "rclone.conf"
    legacy = Path.home() / ".rclone.conf"
    return legacy if (not default.exists() and legacy.exists()) else default


def _rclone_match(location: str) -> re.Match[str] | None:
    if len(location) >= 2 and location[1] == ":" and location[0].isalpha():
        return None  # a Windows drive letter, never an rclone remote
    return _RCLONE_RE.match(location)


def rclone_remote(name: str, config_file: str | os.PathLike[str] | None = None) -> RcloneRemote:
    """The ``type = s3`` remote ``name`` of ``rclone.conf``, as s3fs ``storage_options``.

    Supported keys are those of rclone's s3 backend that matter for reading: ``access_key_id``,
    ``secret_access_key``, ``session_token``, ``endpoint``, ``region``, ``env_auth`` and
    ``force_path_style``. With ``env_auth = true`` (or no keys), credentials come from the AWS
    variables, as rclone does.

    Raises
    ------
    InvalidArgumentError
        When the file or the remote is missing, the remote is not of type ``s3``, or the file is
        encrypted (rclone's ``RCLONE_ENCRYPT_V0``; spora-sd cannot decrypt it).
    """
    path = Path(config_file).expanduser() if config_file is not None else rclone_config_path()
    where = path.as_posix()
    if not path.is_file():
        raise InvalidArgumentError(
            f"{where}: no rclone configuration file, so the rclone remote {name!r} is unknown. "
            "Create it with `rclone config`, point RCLONE_CONFIG to it, or use an s3:// URL with "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL."
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("RCLONE_ENCRYPT_V0:"):
        raise InvalidArgumentError(
            f"{where}: the rclone configuration is encrypted, which spora-sd cannot read. Use an s3:// URL "
            "with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL, or storage_options."
        )
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise InvalidArgumentError(f"{where}: not a valid rclone configuration ({type(exc).__name__})") from None
    if not parser.has_section(name):
        known = ", ".join(sorted(parser.sections())) or "none"
        raise InvalidArgumentError(f"{where}: no rclone remote named {name!r} (remotes there: {known})")
    section = parser[name]
    kind = section.get("type", "").strip()
    if kind != "s3":
        raise InvalidArgumentError(
            f"{where}: rclone remote {name!r} is of type {kind or '(none)'!r}; spora-sd reads remotes of type 's3'"
        )
    options: dict[str, Any] = {}
    env_auth = section.get("env_auth", "false").strip().lower() in ("true", "1", "yes")
    key, secret = section.get("access_key_id", "").strip(), section.get("secret_access_key", "").strip()
    if key and secret and not env_auth:
        options["key"], options["secret"] = key, secret
        if section.get("session_token", "").strip():
            options["token"] = section["session_token"].strip()
    elif not key and not secret and not env_auth:
        # rclone without keys and without env_auth reads anonymously (public buckets)
        options["anon"] = True
    client_kwargs: dict[str, Any] = {}
    if section.get("endpoint", "").strip():
        client_kwargs["endpoint_url"] = section["endpoint"].strip()
    if section.get("region", "").strip():
        client_kwargs["region_name"] = section["region"].strip()
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    if section.get("force_path_style", "true").strip().lower() in ("false", "0", "no"):
        options.setdefault("config_kwargs", {})["s3"] = {"addressing_style": "virtual"}
    return RcloneRemote(name=name, config_file=path, storage_options=options)


# -------------------------------------------------------------------------------------------------
# resolution
@dataclass(frozen=True)
class CohortLocation:
    """A parsed remote location: protocol, URL, the options for its filesystem, and how to show it."""

    protocol: str
    url: str
    storage_options: dict[str, Any] = field(repr=False)
    shown: str

    def __repr__(self) -> str:
        return f"CohortLocation({self.shown!r})"


def parse_storage_options(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the CLI's ``--storage-option``) as a ``storage_options`` dict.

    Dotted keys nest (``client_kwargs.endpoint_url=...``); ``true``/``false`` and integers are
    converted.

    >>> parse_storage_options(["anon=true", "client_kwargs.endpoint_url=http://127.0.0.1:9000"])
    {'anon': True, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:9000'}}
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"--storage-option {redact(pair.split('=')[0])!r}: expected KEY=VALUE")
        parsed: Any = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        elif re.fullmatch(r"-?\d+", value):
            parsed = int(value)
        target = options
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = parsed
    return options


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


#: What spora-sd sets for S3 unless ``storage_options`` say otherwise: botocore's ``standard`` retry
#: mode (5 attempts, exponential backoff with jitter, on throttling, 5xx answers, timeouts and dropped
#: connections) and finite timeouts, so that a server that stops answering is an error, not a hang.
S3_DEFAULTS: dict[str, Any] = {
    "config_kwargs": {
        "retries": {"max_attempts": 5, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 20,
        # botocore's default pool is 10 connections: the metadata of 1,000 images, fetched in one
        # concurrent batch, would then take 100 round trips in sequence
        "max_pool_connections": 64,
    }
}


def default_storage_options(protocol: str) -> dict[str, Any]:
    """The options spora-sd starts from for ``protocol`` (the user's ``storage_options`` win).

    >>> default_storage_options("s3")["config_kwargs"]["retries"]
    {'max_attempts': 5, 'mode': 'standard'}
    """
    if protocol == "s3":
        return copy.deepcopy(S3_DEFAULTS)  # a copy: botocore rewrites the retries dict it is given
    if protocol in ("http", "https"):
        # fsspec's HTTP filesystem re-reads a folder's index page on every listing unless told to cache
        return {"use_listings_cache": True, "listings_expiry_time": 600}
    return {}


def _s3_env_options() -> dict[str, Any]:
    # botocore reads the key variables itself; the endpoint variable is newer than some botocore
    # releases, so it is passed explicitly (it is what S3-compatible servers need)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


#: ``storage_options`` every fsspec filesystem takes (its instance and listing caches).
_FSSPEC_KEYS = ("skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths", "batch_size")


def accepted_option_keys(protocol: str) -> list[str]:
    """The top-level ``storage_options`` keys the filesystem of ``protocol`` accepts, sorted.

    >>> "client_kwargs" in accepted_option_keys("s3") and "headers" in accepted_option_keys("https")
    True
    """
    import inspect

    def named(func: Any) -> set[str]:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {p.name for p in inspect.signature(func).parameters.values() if p.kind in kinds} - {"self"}

    keys = set(_FSSPEC_KEYS)
    if protocol == "s3":
        from aiobotocore.session import AioSession
        from s3fs import S3FileSystem

        keys |= named(S3FileSystem.__init__) | named(AioSession.__init__)  # s3fs hands the rest to AioSession
    else:
        from aiohttp import ClientSession
        from fsspec.implementations.http import HTTPFileSystem

        keys |= named(HTTPFileSystem.__init__) | named(ClientSession._request)  # the rest go to each request
        keys -= {"method", "str_or_url"}
    return sorted(keys - {"asynchronous", "loop"})


def _check_option_keys(shown: str, protocol: str, options: dict[str, Any]) -> None:
    """A storage_options key the filesystem would refuse (with a TypeError, late) is refused here, by name."""
    accepted = accepted_option_keys(protocol)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise InvalidArgumentError(
            f"{shown}: storage_options key {unknown[0]!r} is not accepted by the "
            f"{'s3fs' if protocol == 's3' else 'fsspec HTTP'} filesystem; accepted keys: {', '.join(accepted)}"
        )


def parse_location(location: str, storage_options: dict[str, Any] | None = None) -> CohortLocation | None:
    """The remote location ``location`` names, or ``None`` when it is a local path.

    Raises :class:`~spora_sd.errors.InvalidArgumentError` for a ``storage_options`` key the
    filesystem does not take, naming it and the accepted ones.
    """
    options = dict(storage_options or {})
    match = _URL_RE.match(location)
    if match:
        scheme = match.group("scheme").lower()
        if scheme == "file":
            return None
        if scheme not in REMOTE_PROTOCOLS:
            raise InvalidArgumentError(
                f"{redact(location)}: unsupported URL scheme {scheme!r} (spora-sd reads s3://, http:// and https://)"
            )
        url = f"{scheme}://{match.group('rest')}".rstrip("/")
        if scheme == "s3":
            options = _merge(_merge(default_storage_options("s3"), _s3_env_options()), options)
        else:
            options = _merge(default_storage_options(scheme), options)
        _check_option_keys(redact(url), scheme, dict(storage_options or {}))
        return CohortLocation(protocol=scheme, url=url, storage_options=options, shown=redact(url))
    rclone = _rclone_match(location)
    if rclone is None:
        return None
    remote = rclone_remote(rclone.group("remote"))
    path = rclone.group("path").strip("/")
    if not path:
        raise InvalidArgumentError(f"{location}: an rclone location needs a bucket and a path (remote:bucket/prefix)")
    _check_option_keys(f"{remote.name}:{path}", "s3", dict(storage_options or {}))
    options = _merge(_merge(_merge(default_storage_options("s3"), _s3_env_options()), remote.storage_options), options)
    return CohortLocation(
        protocol="s3", url=f"s3://{path}", storage_options=options, shown=f"{remote.name}:{path} (s3://{path})"
    )


def resolve_location(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Path | UPath:
    """A path object for ``location``: a :class:`~pathlib.Path` when local, a :class:`~upath.UPath` when remote.

    Parameters
    ----------
    location
        A local path, an ``s3://`` or ``http(s)://`` URL, or an rclone ``remote:bucket/path``.
    storage_options
        Passed to the fsspec filesystem (e.g. ``{"key": ..., "secret": ...,
        "client_kwargs": {"endpoint_url": ...}}`` for S3); they win over the rclone remote's settings
        and the AWS variables.

    The storage options (and so any secret) stay inside the returned object's filesystem: its
    ``str()`` is the bare URL, and :func:`display_location` is what messages show.
    """
    if not isinstance(location, str) and getattr(location, "protocol", None) not in (None, "", "file", "local"):
        return location  # already a UPath
    text = os.fspath(location)
    parsed = parse_location(text, storage_options)
    if parsed is None:
        if storage_options:
            raise InvalidArgumentError(f"{text}: storage_options are for remote locations (s3://, https://, rclone)")
        if text.startswith("file://"):
            text = text[len("file://") :]
        return Path(text).expanduser()
    from upath import UPath

    path = UPath(parsed.url, **parsed.storage_options)
    tune_filesystem(path.fs)
    _remember(path)
    return path


#: Attempts of s3fs' own retry loop around each call. botocore retries every request already (the
#: ``standard`` mode of :data:`S3_DEFAULTS`); s3fs' loop (5 attempts by default, not settable through
#: ``storage_options``) multiplies them: a server that hangs took over 2 minutes to be reported with
#: 1 s timeouts (76 attempts). A body cut mid-transfer, which botocore does not retry, is retried by
#: :func:`spora_sd.io.remote.retrying` instead.
S3FS_ATTEMPTS = 1


def limit_retries(fs: Any) -> Any:
    """Set s3fs' own retry count to :data:`S3FS_ATTEMPTS` (other filesystems are left as they are)."""
    if type(fs).__name__ == "S3FileSystem" and getattr(fs, "retries", 0) > S3FS_ATTEMPTS:
        fs.retries = S3FS_ATTEMPTS
    return fs


def tune_filesystem(fs: Any) -> Any:
    """:func:`limit_retries`, and give a new s3fs filesystem a botocore session that shares the model loader.

    s3fs makes a botocore session per filesystem, and its first request loads botocore's S3 service
    model and endpoint data from JSON: 130 to 200 ms (measured), paid by every filesystem, i.e. every
    new set of ``storage_options``. The loader (a cache of those files, no credentials) is shared
    here; the session is still one per filesystem, built as s3fs builds it, so credentials are
    resolved per filesystem as before. Then a new filesystem's first request costs about 10 ms.
    A filesystem that has made a request already is left as it is.
    """
    limit_retries(fs)
    if type(fs).__name__ != "S3FileSystem" or getattr(fs, "session", None) is not None or fs._s3 is not None:
        return fs
    import aiobotocore.session

    session = aiobotocore.session.AioSession(**fs.kwargs)  # what s3fs' set_session makes
    session.register_component("data_loader", _botocore_loader())
    fs.session = session
    return fs


@functools.cache
def _botocore_loader() -> Any:
    import botocore.loaders

    return botocore.loaders.create_loader()


# Remote locations resolved in this process and their options. Work items handed to worker threads
# and processes carry paths as strings (they pickle small and never carry a secret); :func:`as_path`
# turns such a string back into a path over the same filesystem options.
_OPTIONS_BY_PREFIX: dict[str, dict[str, Any]] = {}


def _remember(path: UPath) -> None:
    _OPTIONS_BY_PREFIX[str(path).rstrip("/")] = dict(path.storage_options)


def as_path(location: str | os.PathLike[str] | UPath) -> Path | UPath:
    """A path object for ``location``; a remote URL string gets the options it was resolved with.

    Strings under a location that :func:`resolve_location` returned in this process (e.g. a cohort's
    root) reuse its ``storage_options``; other URLs are resolved afresh (AWS variables, rclone).

    >>> as_path("/data/x").as_posix()
    '/data/x'
    """
    if not isinstance(location, str):
        return location if getattr(location, "protocol", "") not in ("", "file", "local") else Path(location)  # type: ignore[arg-type]
    if not is_remote(location):
        return Path(location)
    best = max((k for k in _OPTIONS_BY_PREFIX if location == k or location.startswith(k + "/")), key=len, default=None)
    if best is None:
        return resolve_location(location)
    from upath import UPath

    path = UPath(location, **_OPTIONS_BY_PREFIX[best])
    tune_filesystem(path.fs)
    return path


def filesystem_and_path(path: Path | UPath) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and the filesystem-relative path of ``path`` (local or remote)."""
    if isinstance(path, Path):
        import fsspec

        return fsspec.filesystem("file"), path.as_posix()
    return path.fs, path.path


def child_name(path: Path | UPath) -> str:
    """The last component of ``path`` (the dataset key for a cohort root)."""
    return PurePosixPath(str(getattr(path, "path", path)).rstrip("/")).name
