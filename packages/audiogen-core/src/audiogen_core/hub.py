"""Model downloads from the Hugging Face hub: an allow-list of repos, retries for transient network
failures only, offline mode, and clear errors for everything else.

Retry policy: ``retries=3`` means up to three *retries after the first try* (four attempts in
all), waiting ``backoff_s * 2**k`` seconds before retry ``k`` (1 s, 2 s, 4 s by default).

Which failures are transient needs care, because huggingface_hub's own errors look like network
errors to a naive ``except OSError``: ``HfHubHTTPError`` (and so ``RepositoryNotFoundError``,
``GatedRepoError``, ``RevisionNotFoundError``, ``RemoteEntryNotFoundError``) subclasses
``OSError``, ``LocalEntryNotFoundError`` is a ``FileNotFoundError`` and ``OfflineModeIsEnabled``
is a ``ConnectionError``. Those are answers, not hiccups, and raise ``DownloadError`` at once.
Conversely the HTTP client's transport errors (httpx ``ConnectError``, ``ReadTimeout``...) are
*not* ``OSError``s, and when the hub cannot be reached while listing a repo, ``snapshot_download``
reports it as a ``LocalEntryNotFoundError`` whose ``__cause__`` is the transport error; both are
retried. HTTP 429 and 5xx are retried; other 4xx are not. A ``PermissionError`` (an unwritable
cache) is permanent. Programming errors (``TypeError``, ``ValueError``...) propagate unchanged.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from audiogen_core.errors import DownloadError, InvalidInputError

import huggingface_hub
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

logger = logging.getLogger(__name__)

KNOWN_REPOS: frozenset[str] = frozenset(
    {
        "facebook/musicgen-small",
        "facebook/musicgen-medium",
        "facebook/musicgen-large",
        "facebook/musicgen-melody",
        "facebook/musicgen-melody-large",
        "facebook/musicgen-style",
        "facebook/musicgen-stereo-small",
        "facebook/musicgen-stereo-medium",
        "facebook/musicgen-stereo-large",
        "facebook/musicgen-stereo-melody",
        "facebook/musicgen-stereo-melody-large",
        "stabilityai/stable-audio-open-small",
        "stabilityai/stable-audio-open-1.0",
        "facebook/encodec_32khz",
        "google-t5/t5-base",
        "t5-base",
        "google/t5-v1_1-base",
        "m-a-p/MERT-v1-95M",
    }
)

DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0

# huggingface_hub's own rule (validate_repo_id): optional "owner/", word characters, '-' and '.',
# starting and ending with a word character, at most 96 characters, no '--' or '..'.
_NAME = r"\w(?:[\w.-]*\w)?"
_REPO_ID = re.compile(rf"(?:{_NAME}/)?{_NAME}")
_MAX_REPO_ID = 96

_TRUE = {"1", "ON", "YES", "TRUE"}


def _http_client_errors() -> tuple[
    tuple[type[BaseException], ...], tuple[type[BaseException], ...]
]:
    """(all client HTTP errors, transport errors) of whichever client huggingface_hub uses.

    huggingface_hub 2.x uses httpx2, 1.x httpx; 0.x used requests, whose errors are already
    ``OSError``s and need nothing extra.
    """
    every: list[type[BaseException]] = []
    transport: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        every.append(mod.HTTPError)
        transport.append(mod.TransportError)
    return tuple(every), tuple(transport)


_CLIENT_ERRORS, _TRANSPORT_ERRORS = _http_client_errors()
_CAUGHT: tuple[type[BaseException], ...] = (OSError, EntryNotFoundError, *_CLIENT_ERRORS)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_transient(err: BaseException) -> bool:
    """Whether a failure can go away by itself (see the module docstring for the rules)."""
    if isinstance(err, HfHubHTTPError):
        status = _status(err)
        return status is not None and (status == 429 or status >= 500)
    if isinstance(err, LocalEntryNotFoundError):
        cause = err.__cause__ or err.__context__
        return cause is not None and _is_transient(cause)
    if isinstance(err, OfflineModeIsEnabled | EntryNotFoundError | PermissionError):
        return False
    if isinstance(err, _TRANSPORT_ERRORS):
        return True
    return isinstance(err, OSError)  # ConnectionError and TimeoutError are OSErrors


def _permanent_message(
    err: BaseException, repo_id: str, revision: str | None, offline: bool
) -> str:
    url = f"https://huggingface.co/{repo_id}"
    if isinstance(err, GatedRepoError):  # before RepositoryNotFoundError: it subclasses it
        return (
            f"{repo_id} is gated: accept its licence at {url} with your account, then log in "
            "(`hf auth login`, or set HF_TOKEN)"
        )
    if isinstance(err, RepositoryNotFoundError):
        return f"{repo_id} was not found on the hub (or it is private: log in with `hf auth login`)"
    if isinstance(err, RevisionNotFoundError):
        return f"{repo_id}: revision {revision!r} does not exist"
    if isinstance(err, OfflineModeIsEnabled) or (
        isinstance(err, LocalEntryNotFoundError)
        and (offline or isinstance(err.__cause__, OfflineModeIsEnabled))
    ):
        return (
            f"{repo_id} is not in the local cache and offline mode is on "
            "(offline=True or HF_HUB_OFFLINE=1): download it once online, or pass a local "
            "model directory"
        )
    if isinstance(err, LocalEntryNotFoundError):  # before EntryNotFoundError: it subclasses it
        return f"{repo_id}: files not available locally or on the hub ({err})"
    if isinstance(err, EntryNotFoundError):
        return f"{repo_id}: a requested file does not exist in the repo ({err})"
    if isinstance(err, HfHubHTTPError):
        status = _status(err)
        if status in (401, 403):
            return f"{repo_id}: access denied (HTTP {status}); log in with `hf auth login`"
        return f"{repo_id}: the hub refused the request (HTTP {status}): {err}"
    if isinstance(err, PermissionError):
        return f"{repo_id}: cannot write the download cache ({err}); set cache_dir or HF_HOME"
    return f"{repo_id}: download failed ({type(err).__name__}: {err})"


def _describe(err: BaseException) -> str:
    """``Type: first line`` of the innermost cause: snapshot_download wraps the transport error
    that says what actually went wrong in a long generic LocalEntryNotFoundError."""
    seen = {id(err)}
    while err.__cause__ is not None and id(err.__cause__) not in seen:
        err = err.__cause__
        seen.add(id(err))
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _offline_from_env() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is a syntactically valid hub repo id (``owner/name`` or a legacy ``name``)."""
    return (
        len(name) <= _MAX_REPO_ID
        and _REPO_ID.fullmatch(name) is not None
        and ".." not in name
        and "--" not in name
        and not name.endswith(".git")
    )


def _check_repo_id(repo_id: Any) -> str:
    if not isinstance(repo_id, str) or not is_repo_id(repo_id):
        raise InvalidInputError(
            f"{repo_id!r} is not a valid hub repo id: expected 'owner/name' (letters, digits, "
            "'-', '_', '.'; at most 96 characters)"
        )
    return repo_id


def _check_allowed(repo_id: str, trust_remote_code: bool) -> None:
    if repo_id in KNOWN_REPOS or trust_remote_code:
        return
    near = [r for r in KNOWN_REPOS if r.lower() == repo_id.lower()]
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise InvalidInputError(
        f"{repo_id} is not a repo audiogen knows{hint}; pass trust_remote_code=True "
        "(CLI: --trust-remote-code) to download it anyway. audiogen never runs code from a repo; "
        f"it only reads weights and configs. Known repos: {', '.join(sorted(KNOWN_REPOS))}"
    )


def snapshot(
    repo_id: str,
    *,
    allow_patterns: str | Sequence[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    trust_remote_code: bool = False,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    sleep: Callable[[float], None] | None = None,
) -> Path:
    """Download (or find in the cache) a snapshot of ``repo_id`` and return its local directory.

    ``offline=None`` follows the ``HF_HUB_OFFLINE`` environment variable; offline means the local
    cache only and no retries. Unknown repos need ``trust_remote_code=True``. ``sleep`` replaces
    ``time.sleep`` between retries (tests).
    """
    _check_repo_id(repo_id)
    _check_allowed(repo_id, trust_remote_code)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise InvalidInputError(f"revision must be a non-empty string, got {revision!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInputError(f"retries must be an integer >= 0, got {retries!r}")
    if not backoff_s >= 0:
        raise InvalidInputError(f"backoff_s must be >= 0, got {backoff_s!r}")
    local_only = _offline_from_env() if offline is None else bool(offline)
    patterns = [allow_patterns] if isinstance(allow_patterns, str) else allow_patterns
    wait = sleep if sleep is not None else time.sleep
    attempts = 1 if local_only else retries + 1

    for attempt in range(attempts):
        try:
            # Looked up on the module at call time so tests can patch it.
            folder = huggingface_hub.snapshot_download(
                repo_id,
                allow_patterns=list(patterns) if patterns is not None else None,
                revision=revision,
                cache_dir=str(Path(cache_dir).expanduser()) if cache_dir is not None else None,
                local_files_only=local_only,
            )
        except _CAUGHT as err:
            if local_only or not _is_transient(err):
                raise DownloadError(_permanent_message(err, repo_id, revision, local_only)) from err
            if attempt == attempts - 1:
                raise DownloadError(
                    f"{repo_id}: the Hugging Face hub is unreachable after {attempts} attempts "
                    f"({_describe(err)}). To work offline, set HF_HUB_OFFLINE=1 with the "
                    "model already in the cache (or pass offline=True), or pass a local model "
                    "directory instead of a repo id."
                ) from err
            delay = backoff_s * 2**attempt
            logger.warning(
                "%s: download failed (%s); retry %d of %d in %.1f s",
                repo_id,
                _describe(err),
                attempt + 1,
                retries,
                delay,
            )
            wait(delay)
        else:
            return Path(folder)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _looks_like_path(text: str) -> bool:
    if text in (".", "..") or text.startswith(("./", "../", "/", "~", ".\\", "..\\")):
        return True
    seps = [os.sep, "/"] + ([os.altsep] if os.altsep else [])
    return any(sep in text for sep in seps) and not is_repo_id(text)


def resolve(name_or_path: str | os.PathLike[str], **kw: Any) -> Path:
    """A local model directory (returned resolved) or a hub repo id (downloaded via ``snapshot``).

    An existing directory always wins. Anything that looks like a path (starts with ./ / ~, or has
    separators and is not ``owner/name``) but does not exist is an error rather than a hub lookup.
    Keyword arguments go to ``snapshot``.
    """
    path_given = isinstance(name_or_path, os.PathLike)
    text = os.fspath(name_or_path) if path_given or isinstance(name_or_path, str) else None
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(
            f"expected a model directory or a hub repo id, got {name_or_path!r}"
        )
    p = Path(text).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise InvalidInputError(f"{p}: is a file; expected a model directory or a hub repo id")
    if path_given or _looks_like_path(text):
        raise InvalidInputError(f"{p}: model directory does not exist")
    if not is_repo_id(text):
        raise InvalidInputError(
            f"{text!r} is neither an existing directory nor a valid hub repo id (owner/name)"
        )
    return snapshot(text, **kw)


__all__ = [
    "DEFAULT_BACKOFF_S",
    "DEFAULT_RETRIES",
    "KNOWN_REPOS",
    "is_repo_id",
    "resolve",
    "snapshot",
]
