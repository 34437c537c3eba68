"""Generate the Python stubs of ``proto/recsys/v1/*.proto`` with the pinned grpcio-tools.

``python -m recsys.serving.protogen OUT_DIR`` (what ``scripts/gen_proto.sh`` runs). protoc names
generated imports after the proto path (``from recsys.v1 import recommender_pb2``); the stubs live
in the package ``recsys.serving.v1``, so that one import line is rewritten. Output is a pure
function of the .proto files and the grpcio-tools version, which the stale-stubs test relies on.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = PROJECT_ROOT / "proto"
PROTO_PACKAGE = "recsys/v1"
STUB_PACKAGE = "recsys.serving.v1"
INIT = '"""Generated gRPC stubs of proto/recsys/v1 (scripts/gen_proto.sh); do not edit."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write ``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py`` and ``__init__.py`` into ``out_dir``."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
                *(str(p.relative_to(PROTO_ROOT)) for p in proto_files())]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        written = []
        for src in sorted((Path(tmp) / PROTO_PACKAGE).iterdir()):
            text = re.sub(r"^from recsys\.v1 import ", f"from {STUB_PACKAGE} import ",
                          src.read_text(), flags=re.MULTILINE)
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    init = out_dir / "__init__.py"
    init.write_text(INIT)
    return [init, *written]


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else PROJECT_ROOT / "recsys" / "serving" / "v1"
    for path in generate(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
