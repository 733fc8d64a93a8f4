"""audiogen_core.hub against the ``fake_hub`` fixture (tests/conftest.py): allow-list, retry
policy (which errors are transient, how often, which delays), offline mode and resolve()."""

from __future__ import annotations

import errno
import importlib
from pathlib import Path
from typing import Any

from audiogen_core import hub
from audiogen_core.errors import DownloadError, InvalidInputError

import huggingface_hub
import pytest
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from hypothesis import given
from hypothesis import strategies as st

REPO = "facebook/musicgen-small"
FILES: dict[str, bytes | str | Path] = {
    "config.json": '{"model_type": "musicgen"}',
    "model.safetensors": b"\x00" * 16,
    "tokenizer/spiece.model": b"sp",
    "README.md": "# card",
    "pytorch_model.bin": b"pickle",
}


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def hub_with_repo(fake_hub: Any) -> Any:
    fake_hub.add(REPO, FILES)
    return fake_hub


def transport_error() -> BaseException:
    """What the HTTP client raises when the hub cannot be reached (not an OSError in httpx)."""
    for name in ("httpx2", "httpx"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        return mod.ConnectError("[Errno 111] Connection refused")
    return ConnectionError("Connection refused")


def unreachable_hub_error() -> BaseException:
    """What snapshot_download itself raises when repo listing failed to connect: a
    LocalEntryNotFoundError chained from the transport error (huggingface_hub _snapshot_download)."""
    err = LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub")
    err.__cause__ = transport_error()
    return err


def test_success_returns_the_snapshot_dir(hub_with_repo: Any) -> None:
    path = hub.snapshot(REPO, sleep=Sleeps())
    assert isinstance(path, Path) and path.is_dir()
    assert files_in(path) == set(FILES)
    assert (path / "config.json").read_text() == FILES["config.json"]
    [call] = hub_with_repo.calls
    assert call["repo_id"] == REPO and call["local_files_only"] is False


def test_allow_patterns_honoured(hub_with_repo: Any, tmp_path: Path) -> None:
    path = hub.snapshot(
        REPO, allow_patterns=["*.json", "*.safetensors", "tokenizer/"], cache_dir=tmp_path
    )
    assert files_in(path) == {"config.json", "model.safetensors", "tokenizer/spiece.model"}
    assert path.is_relative_to(tmp_path)
    assert hub_with_repo.calls[0]["allow_patterns"] == ["*.json", "*.safetensors", "tokenizer/"]
    single = hub.snapshot(REPO, allow_patterns="*.md", cache_dir=tmp_path / "other")
    assert files_in(single) == {"README.md"}


def test_revision_passed_through(hub_with_repo: Any) -> None:
    hub.snapshot(REPO, revision="v1")
    assert hub_with_repo.calls[0]["revision"] == "v1"
    with pytest.raises(InvalidInputError, match="revision"):
        hub.snapshot(REPO, revision="")


def test_unknown_repo_refused_unless_trusted(fake_hub: Any) -> None:
    fake_hub.add("someone/custom-musicgen", FILES)
    with pytest.raises(InvalidInputError, match="trust_remote_code=True"):
        hub.snapshot("someone/custom-musicgen")
    assert fake_hub.count == 0  # refused before any download
    path = hub.snapshot("someone/custom-musicgen", trust_remote_code=True)
    assert files_in(path) == set(FILES)


def test_allow_list_is_case_sensitive_with_a_hint(fake_hub: Any) -> None:
    with pytest.raises(InvalidInputError, match="did you mean facebook/musicgen-small"):
        hub.snapshot("Facebook/MusicGen-Small")


def test_every_known_repo_is_a_valid_id() -> None:
    assert len(hub.KNOWN_REPOS) == 18
    assert all(hub.is_repo_id(r) for r in hub.KNOWN_REPOS)


def test_transient_failures_retried_with_backoff_then_success(hub_with_repo: Any) -> None:
    hub_with_repo.errors = [
        transport_error(),
        ConnectionResetError(errno.ECONNRESET, "reset"),
        unreachable_hub_error(),
    ]
    sleeps = Sleeps()
    path = hub.snapshot(REPO, sleep=sleeps, backoff_s=0.5)
    assert path.is_dir()
    assert hub_with_repo.count == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "make_error",
    [
        lambda h: TimeoutError("read timed out"),
        lambda h: OSError(errno.EIO, "I/O error"),
        lambda h: h.http_error(HfHubHTTPError, 503),
        lambda h: h.http_error(HfHubHTTPError, 429),
    ],
    ids=["timeout", "oserror", "http-503", "http-429"],
)
def test_each_transient_kind_is_retried(hub_with_repo: Any, make_error: Any) -> None:
    hub_with_repo.errors = [make_error(hub_with_repo)]
    sleeps = Sleeps()
    hub.snapshot(REPO, sleep=sleeps)
    assert hub_with_repo.count == 2 and sleeps.delays == [1.0]


def test_permanent_failure_after_retries(hub_with_repo: Any) -> None:
    hub_with_repo.errors = [unreachable_hub_error() for _ in range(10)]
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="unreachable after 4 attempts") as info:
        hub.snapshot(REPO, sleep=sleeps)
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "local model directory" in str(info.value)
    assert hub_with_repo.count == 4  # first try + 3 retries
    assert sleeps.delays == [1.0, 2.0, 4.0]  # no sleep after the last attempt
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)


def test_retries_zero_means_one_attempt(hub_with_repo: Any) -> None:
    hub_with_repo.errors = [TimeoutError("slow")]
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="after 1 attempts"):
        hub.snapshot(REPO, retries=0, sleep=sleeps)
    assert hub_with_repo.count == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    ("make_error", "match"),
    [
        (lambda h: h.http_error(RepositoryNotFoundError, 404), "not found on the hub"),
        (lambda h: h.http_error(GatedRepoError, 403), "gated: accept its licence"),
        (lambda h: h.http_error(RevisionNotFoundError, 404), "revision"),
        (lambda h: h.http_error(RemoteEntryNotFoundError, 404), "does not exist in the repo"),
        (lambda h: h.http_error(HfHubHTTPError, 401), r"access denied \(HTTP 401\)"),
        (lambda h: h.http_error(HfHubHTTPError, 400), r"HTTP 400"),
        (lambda h: OfflineModeIsEnabled("offline"), "offline mode is on"),
        (lambda h: PermissionError(errno.EACCES, "denied"), "cannot write the download cache"),
    ],
    ids=["not-found", "gated", "revision", "entry", "401", "400", "hf-offline", "permission"],
)
def test_permanent_errors_are_not_retried(hub_with_repo: Any, make_error: Any, match: str) -> None:
    err = make_error(hub_with_repo)
    assert isinstance(err, OSError)  # the trap: every one of these is an OSError
    hub_with_repo.errors = [err]
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match=match) as info:
        hub.snapshot(REPO, sleep=sleeps, revision="v9")
    assert info.value.__cause__ is err
    assert hub_with_repo.count == 1 and sleeps.delays == []


def test_repo_missing_on_fake_hub_is_not_retried(fake_hub: Any) -> None:
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="not found on the hub"):
        hub.snapshot(REPO, sleep=sleeps)
    assert fake_hub.count == 1 and sleeps.delays == []


@pytest.mark.parametrize("exc", [TypeError("bad arg"), ValueError("bad value"), KeyError("k")])
def test_programming_errors_propagate(hub_with_repo: Any, exc: Exception) -> None:
    hub_with_repo.errors = [exc]
    sleeps = Sleeps()
    with pytest.raises(type(exc)) as info:
        hub.snapshot(REPO, sleep=sleeps)
    assert info.value is exc
    assert hub_with_repo.count == 1 and sleeps.delays == []


def test_offline_uses_the_cache_only(
    hub_with_repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="not in the local cache and offline mode is on"):
        hub.snapshot(REPO, offline=True, cache_dir=tmp_path, sleep=sleeps)
    assert hub_with_repo.calls[-1]["local_files_only"] is True
    assert hub_with_repo.count == 1 and sleeps.delays == []  # no retries offline

    online = hub.snapshot(REPO, cache_dir=tmp_path)
    assert hub.snapshot(REPO, offline=True, cache_dir=tmp_path) == online

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.snapshot(REPO, cache_dir=tmp_path) == online
    assert hub_with_repo.calls[-1]["local_files_only"] is True
    # An explicit argument beats the environment.
    hub.snapshot(REPO, offline=False, cache_dir=tmp_path)
    assert hub_with_repo.calls[-1]["local_files_only"] is False


def test_offline_transient_looking_error_is_not_retried(hub_with_repo: Any) -> None:
    hub_with_repo.errors = [TimeoutError("disk slow")]
    sleeps = Sleeps()
    with pytest.raises(DownloadError):
        hub.snapshot(REPO, offline=True, sleep=sleeps)
    assert hub_with_repo.count == 1 and sleeps.delays == []


@pytest.mark.parametrize(
    "bad",
    ["", "a/b/c", "owner/", "/name", "a--b/c", "a/b..c", "a/b.git", "-a/b", "a b/c", "x" * 97, 5],
)
def test_invalid_repo_ids(fake_hub: Any, bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="not a valid hub repo id"):
        hub.snapshot(bad, trust_remote_code=True)
    assert fake_hub.count == 0


@given(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_]|[-.][A-Za-z0-9]){0,20}", fullmatch=True))
def test_property_repo_id_syntax(name: str) -> None:
    assert hub.is_repo_id(f"owner/{name}") and hub.is_repo_id(name)
    assert not hub.is_repo_id(f"owner/{name}/extra")
    assert not hub.is_repo_id(f"../{name}")


def test_bad_arguments(fake_hub: Any) -> None:
    with pytest.raises(InvalidInputError, match="retries"):
        hub.snapshot(REPO, retries=-1)
    with pytest.raises(InvalidInputError, match="backoff_s"):
        hub.snapshot(REPO, backoff_s=float("nan"))
    assert fake_hub.count == 0


# resolve()


def test_resolve_local_dir(fake_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "models" / "mine"
    model.mkdir(parents=True)
    assert hub.resolve(model) == model.resolve()
    assert hub.resolve(str(model)) == model.resolve()
    monkeypatch.chdir(tmp_path)
    assert hub.resolve("./models/mine") == model.resolve()
    # A directory shaped like a repo id wins over the hub (what transformers does too).
    assert hub.resolve("models/mine") == model.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.resolve("~/models/mine") == model.resolve()
    assert fake_hub.count == 0


@pytest.mark.parametrize(
    "bad", ["./nope", "../nope", "/no/such/dir", "~/no-such-dir", "a/b/c", "models/x/", "."]
)
def test_resolve_missing_paths_are_not_hub_lookups(
    fake_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    if bad == ".":
        assert hub.resolve(bad) == empty.resolve()  # "." exists: it is a directory
        return
    with pytest.raises(InvalidInputError, match="does not exist"):
        hub.resolve(bad)
    assert fake_hub.count == 0


def test_resolve_errors(fake_hub: Any, tmp_path: Path) -> None:
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="is a file"):
        hub.resolve(f)
    with pytest.raises(InvalidInputError, match="does not exist"):
        hub.resolve(tmp_path / "missing")  # a Path is always a path, never a repo id
    with pytest.raises(InvalidInputError, match="neither an existing directory"):
        hub.resolve("bad name!")
    for empty in ("", "   ", None, 3):
        with pytest.raises(InvalidInputError, match="expected a model directory"):
            hub.resolve(empty)  # type: ignore[arg-type]
    assert fake_hub.count == 0


def test_resolve_repo_id_downloads(
    hub_with_repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # so no local "facebook/" directory can shadow the id
    path = hub.resolve(REPO, allow_patterns=["*.json"], sleep=Sleeps())
    assert files_in(path) == {"config.json"}
    assert hub_with_repo.calls[0]["allow_patterns"] == ["*.json"]
    with pytest.raises(InvalidInputError, match="trust_remote_code"):
        hub.resolve("someone/else")


def test_hub_function_patched_at_module_attribute(hub_with_repo: Any) -> None:
    # hub.py must look snapshot_download up on the module at call time, or patches miss it.
    assert huggingface_hub.snapshot_download == hub_with_repo.snapshot_download


def test_real_snapshot_download_with_hub_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real huggingface_hub code against a closed local port (no network): proves that an
    unreachable hub surfaces as a retried error, and offline mode as a permanent one."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: connections are refused
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    sleeps = Sleeps()
    with pytest.raises(DownloadError, match="unreachable after 3 attempts") as info:
        hub.snapshot(REPO, cache_dir=tmp_path, retries=2, sleep=sleeps)
    assert "ConnectError" in str(info.value) or "Connection" in str(info.value)
    assert sleeps.delays == [1.0, 2.0]
    with pytest.raises(DownloadError, match="offline mode is on"):
        hub.snapshot(REPO, cache_dir=tmp_path, offline=True, sleep=sleeps)
    assert sleeps.delays == [1.0, 2.0]
