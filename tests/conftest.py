"""Shared test set-up: fixture paths and the torch gate for live reference tests.

Tests that compare against a torch reference *live* take the ``torch`` fixture. Without torch they
skip (the committed fixtures in tests/fixtures still prove parity); with
``AUDIOGEN_REQUIRE_TORCH=1`` (set by .ci/run) a missing torch is a failure, so CI never skips them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import audiogen_core  # noqa: F401  - preloads OpenBLAS before anything imports mlx

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def torch() -> ModuleType:
    try:
        mod = importlib.import_module("torch")
    except ImportError:
        if os.environ.get("AUDIOGEN_REQUIRE_TORCH", "") not in ("", "0"):
            pytest.fail("AUDIOGEN_REQUIRE_TORCH is set but torch is not importable")
        pytest.skip("torch not installed: live reference test (committed fixtures still ran)")
    mod.manual_seed(0)
    # One thread: audiogen_core preloads the system OpenBLAS globally and torch's own sgemm calls
    # resolve to it; with 2 torch threads about 1 run in 8 returned logits 6e-4 off (a
    # reentrancy problem of that pthread OpenBLAS build). One thread was never wrong.
    mod.set_num_threads(1)
    return mod


class FakeHub:
    """Stands in for ``huggingface_hub.snapshot_download``; never touches the network.

    ``add(repo_id, files)`` registers a repo (``files`` maps repo paths to bytes, text or a local
    ``Path`` to copy). A call lays out the files that match ``allow_patterns`` / ``ignore_patterns``
    (fnmatch, ``"dir/"`` meaning ``"dir/*"``, like the real one) under
    ``<cache>/models--owner--name/snapshots/<fake commit>/`` and returns that directory.
    ``local_files_only=True`` only finds repos laid out before. ``errors`` are raised by the
    next calls, in order; ``calls`` records every call's arguments.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: dict[str, dict[str, bytes | str | Path]] = {}
        self.errors: list[BaseException] = []
        self.calls: list[dict[str, object]] = []

    def add(self, repo_id: str, files: dict[str, bytes | str | Path]) -> None:
        self.repos[repo_id] = dict(files)

    def add_dir(self, repo_id: str, directory: Path) -> None:
        self.add(
            repo_id,
            {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()},
        )

    @property
    def count(self) -> int:
        return len(self.calls)

    @staticmethod
    def http_error(cls: type[BaseException], status: int, message: str = "") -> BaseException:
        """An ``HfHubHTTPError`` subclass instance without a real HTTP response object."""
        from types import SimpleNamespace

        response = SimpleNamespace(status_code=status, headers={}, request=None)
        return cls(message or f"{status} Client Error", response=response)  # type: ignore[call-arg]

    def snapshot_download(self, repo_id: str, **kwargs: object) -> str:
        import fnmatch
        import hashlib
        import shutil

        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

        self.calls.append({"repo_id": repo_id, **kwargs})
        if self.errors:
            raise self.errors.pop(0)
        revision = str(kwargs.get("revision") or "main")
        cache = Path(str(kwargs.get("cache_dir") or self.root))
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
        folder = repo_dir / "snapshots" / commit
        if kwargs.get("local_files_only"):
            if not folder.is_dir():
                raise LocalEntryNotFoundError(
                    "Cannot find an appropriate cached snapshot folder for the specified revision "
                    "on the local disk and outgoing traffic has been disabled."
                )
            return str(folder)
        if repo_id not in self.repos:
            raise self.http_error(RepositoryNotFoundError, 404, f"404: {repo_id} not found")

        def patterns(key: str) -> list[str] | None:
            value = kwargs.get(key)
            if value is None:
                return None
            items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
            return [p + "*" if p.endswith("/") else p for p in items]

        allow, ignore = patterns("allow_patterns"), patterns("ignore_patterns")
        for name, content in self.repos[repo_id].items():
            if allow is not None and not any(fnmatch.fnmatchcase(name, p) for p in allow):
                continue
            if ignore is not None and any(fnmatch.fnmatchcase(name, p) for p in ignore):
                continue
            dest = folder / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, dest)
            elif isinstance(content, str):
                dest.write_text(content)
            else:
                dest.write_bytes(content)
        folder.mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / revision).write_text(commit)
        return str(folder)


@pytest.fixture
def fake_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """A ``FakeHub`` patched in as ``huggingface_hub.snapshot_download``, offline env vars cleared."""
    import huggingface_hub

    hub = FakeHub(tmp_path_factory.mktemp("fake_hub"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return hub
