"""Regenerate the committed reference fixtures in tests/fixtures with torch.

Each module in tools/fixtures/ defines ``build(out: Path) -> None``, which builds tiny random
upstream models (transformers etc. on torch CPU), saves them in the upstream file format and records
their outputs. Run:  uv run python tools/make_fixtures.py [name ...]   (needs torch installed)
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = Path(__file__).parent / "fixtures"
OUT = ROOT / "tests" / "fixtures"


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"fixture_{path.stem}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    names = sorted(p.stem for p in BUILDERS.glob("*.py") if not p.stem.startswith("_"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"fixtures to rebuild (default all: {names})")
    args = ap.parse_args()
    unknown = set(args.names) - set(names)
    if unknown:
        ap.error(f"unknown fixture(s) {sorted(unknown)}; known: {names}")
    import audiogen_core  # noqa: F401  - OpenBLAS before mlx

    sys.path.insert(0, str(BUILDERS))
    for name in args.names or names:
        out = OUT / name
        tmp = OUT / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _load(BUILDERS / f"{name}.py").build(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"{name}: {size / 1024:.0f} KiB in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
