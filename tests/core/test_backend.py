"""backend: the OpenBLAS preload happens on import, is reported, warns when too late, and can be
turned off. Each case runs in a fresh interpreter because the preload is once per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HAS_OPENBLAS = any(
    Path(p).exists()
    for p in (
        "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
        "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
        "/lib/x86_64-linux-gnu/libopenblas.so.0",
    )
)
linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="OpenBLAS preload is Linux-only"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )


REPORT = (
    "import audiogen_core, json; from audiogen_core import backend; "
    "print(json.dumps(backend.info()))"
)


@linux
def test_import_preloads_system_openblas() -> None:
    if not HAS_OPENBLAS:
        pytest.fail("system OpenBLAS missing: install libopenblas0-pthread (.ci/run does)")
    info = json.loads(_run(REPORT).stdout)
    assert info["cpu blas"].startswith("OpenBLAS (")
    maps = _run(
        "import audiogen_core, mlx.core as mx; mx.eval(mx.ones((64,64)) @ mx.ones((64,64)));"
        "print(open('/proc/self/maps').read())"
    ).stdout
    assert "libopenblas" in maps


@linux
def test_env_var_disables_preload() -> None:
    proc = _run(REPORT, AUDIOGEN_NO_OPENBLAS="1")
    info = json.loads(proc.stdout)
    assert info["cpu blas"].startswith(
        "MLX bundled reference BLAS (disabled by AUDIOGEN_NO_OPENBLAS"
    )
    assert "RuntimeWarning" not in proc.stderr


@linux
def test_warns_once_when_mlx_imported_first() -> None:
    proc = _run(
        "import mlx.core; import audiogen_core; from audiogen_core import backend;"
        "backend.preload_openblas(); print(backend.active_blas())"
    )
    assert proc.stderr.count("mlx was imported before audiogen_core") == 1
    assert "MLX bundled reference BLAS" in proc.stdout


@linux
def test_warns_when_no_openblas(tmp_path: Path) -> None:
    proc = _run(REPORT, AUDIOGEN_OPENBLAS=str(tmp_path / "libmissing.so"))
    assert "No system OpenBLAS found" in proc.stderr
    assert "no system OpenBLAS found" in json.loads(proc.stdout)["cpu blas"]


def test_info_reports_device_and_versions() -> None:
    info = json.loads(_run(REPORT).stdout)
    assert {"audiogen-core", "mlx", "device", "gpu backend", "cpu blas"} <= info.keys()
    assert info["audiogen-core"] == "0.1.0"


@linux
@pytest.mark.parametrize(
    "module", ["audiogen_musicgen", "audiogen_musicgen.decoder", "audiogen_core.encodec"]
)
def test_every_entry_point_preloads_before_mlx(module: str) -> None:
    """Importing any audiogen package first must leave MLX on the system OpenBLAS (isort keeps
    audiogen_core above mlx: see [tool.ruff.lint.isort] in pyproject.toml)."""
    if not HAS_OPENBLAS:
        pytest.fail("system OpenBLAS missing: install libopenblas0-pthread (.ci/run does)")
    out = _run(
        f"import {module}, mlx.core as mx; from audiogen_core import backend; "
        "print(backend.active_blas())"
    ).stdout
    assert out.startswith("OpenBLAS ("), out


@linux
def test_kernel_family_is_chosen_without_leaking_the_variable() -> None:
    """On a CPU with AVX2/AVX-512 the preload picks Haswell/SkylakeX kernels (Debian's OpenBLAS
    0.3.21 falls back to slow generic ones on CPUs newer than it), for its own start-up only; a
    user's OPENBLAS_CORETYPE wins."""
    import os

    if not HAS_OPENBLAS:
        pytest.fail("system OpenBLAS missing: install libopenblas0-pthread (.ci/run does)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = (
        "import os, audiogen_core; from audiogen_core import backend; "
        "print(backend.openblas_core(), backend._coretype_hint(), "
        "'OPENBLAS_CORETYPE' in os.environ)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    core, hint, leaked = proc.stdout.split()
    assert leaked == "False"
    if hint != "None":
        assert core == hint
    user = _run(code, OPENBLAS_CORETYPE="Haswell").stdout.split()
    assert user[0] == "Haswell" and user[2] == "True"


def test_resolve_dtype_names_and_errors() -> None:
    from audiogen_core import backend
    from audiogen_core.errors import InvalidInputError

    import mlx.core as mx

    assert backend.resolve_dtype("bfloat16") == mx.bfloat16
    assert backend.resolve_dtype(mx.float16) == mx.float16
    assert backend.resolve_dtype(None) == backend.compute_dtype()
    for bad in ("float64", mx.int32):
        with pytest.raises(InvalidInputError, match="dtype must be"):
            backend.resolve_dtype(bad)


def test_progress_callback_forms() -> None:
    from audiogen_core.errors import InvalidInputError
    from audiogen_core.progress import progress_callback

    assert progress_callback(None) == (None, None) == progress_callback(False)
    seen: list[tuple[int, int]] = []
    report, bar = progress_callback(lambda s, n: seen.append((s, n)))
    assert report is not None and bar is None
    report(1, 3)
    assert seen == [(1, 3)]
    report, bar = progress_callback(True, "testing")
    assert report is not None
    report(2, 4)
    if bar is not None:
        assert (bar.n, bar.total) == (2, 4)
        bar.close()
    with pytest.raises(InvalidInputError, match="progress must be"):
        progress_callback("yes")  # type: ignore[arg-type]
