"""The on-disk cache of the fused CUDA kernels (``cuda_step.cached_compile``) and the source each
kernel variant is compiled from. Runs anywhere: the compiler is a stand-in here; the compiled
kernels themselves are tested on a GPU (test_cuda_step.py)."""

from __future__ import annotations

from pathlib import Path

import audiogen_core  # noqa: F401  - before mlx

import mlx.core as mx
import pytest

from audiogen_musicgen import cuda_step


class _Counting:
    def __init__(self) -> None:
        self.sources: list[str] = []

    def __call__(self, source: str, arch: str) -> bytes:
        self.sources.append(source)
        return f"{arch}:{source}".encode()


def test_a_kernel_is_compiled_once_and_then_read_from_disk(tmp_path: Path) -> None:
    compile_fn = _Counting()
    first = cuda_step.cached_compile("src", "sm_90", "13.0", compile_fn, tmp_path / "k")
    assert first == b"sm_90:src" and len(compile_fn.sources) == 1

    def fail(source: str, arch: str) -> bytes:
        raise AssertionError("compiled again")

    # A later process (nothing in memory) reads the file.
    assert cuda_step.cached_compile("src", "sm_90", "13.0", fail, tmp_path / "k") == first
    files = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert len(files) == 1 and files[0].endswith(".cubin")  # no temporary file left behind


@pytest.mark.parametrize(
    "change", [("other", "sm_90", "13.0"), ("src", "sm_80", "13.0"), ("src", "sm_90", "13.1")]
)
def test_source_architecture_and_compiler_version_each_key_the_cache(
    tmp_path: Path, change: tuple[str, str, str]
) -> None:
    compile_fn = _Counting()
    cuda_step.cached_compile("src", "sm_90", "13.0", compile_fn, tmp_path)
    source, arch, version = change
    assert cuda_step.cached_compile(source, arch, version, compile_fn, tmp_path) == (
        f"{arch}:{source}".encode()
    )
    assert len(compile_fn.sources) == 2 and len(list(tmp_path.iterdir())) == 2


def test_an_unwritable_cache_only_costs_the_compile(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    compile_fn = _Counting()
    for _ in range(2):
        out = cuda_step.cached_compile("src", "sm_90", "13.0", compile_fn, blocker / "k")
        assert out == b"sm_90:src"
    assert len(compile_fn.sources) == 2


def test_each_variant_is_its_own_symbol_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Template constants that change the code (dtype, rows, LayerNorm eps, ...) give distinct
    kernels; the source names the symbol MLX looks up and instantiates the right template."""
    compile_fn = _Counting()

    class Fake:
        version = "0.0"
        compile = staticmethod(compile_fn)

    monkeypatch.setattr(cuda_step, "_compiler", lambda: (Fake(), "sm_90"))
    monkeypatch.setattr(cuda_step, "kernel_cache_dir", lambda: tmp_path)
    cuda_step._kernel.cache_clear()
    try:
        gemv = (("B", 2), ("K", 1024), ("LN", True), ("ACT", 1), ("RES", False))
        variants = [
            ("gemv", mx.float16, (*gemv, ("PER_ROW", False), ("EPS", 1e-5))),
            ("gemv", mx.float16, (*gemv, ("PER_ROW", False), ("EPS", 1e-6))),
            ("gemv", mx.bfloat16, (*gemv, ("PER_ROW", False), ("EPS", 1e-5))),
            ("gemv", mx.float16, (*gemv, ("PER_ROW", True), ("EPS", 1e-5))),
            ("attention", mx.float16, (("D", 64),)),
            ("folded_cross", mx.float32, (("H", 16), ("MASKED", True))),
        ]
        names = [cuda_step._kernel(*v)[0] for v in variants]
        assert len(set(names)) == len(variants) == len(compile_fn.sources)
        for name, source in zip(names, compile_fn.sources, strict=True):
            assert f'extern "C" __global__ void {name}(' in source
            assert "#include" not in source  # compiled without headers (see _Nvrtc)
        assert "1e-05f" in compile_fn.sources[0] and "1e-06f" in compile_fn.sources[1]
        assert "typedef ag_bf16 T;" in compile_fn.sources[2]
        assert (
            "const T* mask" in compile_fn.sources[5] and "typedef float T;" in compile_fn.sources[5]
        )
        # The same variant again is served from memory.
        cuda_step._kernel(*variants[0])
        assert len(compile_fn.sources) == len(variants)
    finally:
        cuda_step._kernel.cache_clear()
