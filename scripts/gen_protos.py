"""Regenerate the Python stubs (and typed .pyi stubs) from protos/.

    python scripts/gen_protos.py            # write sahayak_rpc/_proto/
    python scripts/gen_protos.py --check    # exit 1 if the committed stubs are stale

protoc (from the pinned grpcio-tools) writes `from sahayak.v1 import x_pb2`
(and `from inference import ...` for the Open Inference Protocol contract in
protos/inference/); the stubs live inside our package, so those imports are
rewritten to `from sahayak_rpc._proto.sahayak.v1 import x_pb2` (and
`sahayak_rpc._proto.inference`).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "sahayak_rpc" / "_proto"
# The proto packages, each with the directory its stubs are written to (below OUT).
PACKAGES = ("sahayak.v1", "inference")
_IMPORT = re.compile(r"^(from|import) (sahayak\.v1|inference)\b", re.MULTILINE)


def _plugin(name: str) -> str:
    exe = Path(sysconfig.get_path("scripts")) / name
    found = exe if exe.exists() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found: pip install mypy-protobuf")
    return str(found)


def generate(out: Path) -> None:
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in out.rglob("*.py*"):
        text = path.read_text()
        new = _IMPORT.sub(r"\1 sahayak_rpc._proto.\2", text)
        if new != text:
            path.write_text(new)
    packages = {out}
    for name in PACKAGES:
        parts = name.split(".")
        packages.update(out.joinpath(*parts[:i]) for i in range(1, len(parts) + 1))
    for pkg in sorted(packages):
        (pkg / "__init__.py").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if stubs are stale")
    opts = parser.parse_args()
    if not opts.check:
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = []
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                rel = path.relative_to(tmp)
                mine = OUT / rel
                if not mine.exists() or not filecmp.cmp(path, mine, shallow=False):
                    stale.append(str(rel))
        for path in sorted(OUT.rglob("*")):
            rel = path.relative_to(OUT)
            if path.is_file() and "__pycache__" not in rel.parts and not (Path(tmp) / rel).exists():
                stale.append(str(rel))
        if stale:
            print("stale generated stubs (run python scripts/gen_protos.py):", *stale, sep="\n  ")
            return 1
    print("generated stubs are up to date")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
