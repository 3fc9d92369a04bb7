"""Regenerate the committed Python stubs from `protos/tribind/v1/tribind.proto` (`make protos`).

The proto is compiled with the repository root as include path, so the stubs import each other as
`protos.tribind.v1...` and never collide with the `tribind` application package. The stubs are
committed; `tests/test_service_protos.py` regenerates them into a temporary folder and diffs, so an
edited proto without regenerated stubs fails the suite.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_FILES: tuple[str, ...] = ("protos/tribind/v1/tribind.proto",)
GENERATED_SUFFIXES: tuple[str, ...] = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_paths(proto: str) -> list[str]:
    """Repository-relative paths of the stubs protoc writes for one proto file."""
    stem = proto[: -len(".proto")]
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def generate(out_root: Path) -> list[Path]:
    """Compile every proto into `out_root` (mirroring the repository layout); returns the files written."""
    from grpc_tools import protoc  # grpcio-tools is pinned with grpcio so the stubs match the runtime

    well_known = str(resources.files("grpc_tools") / "_proto")
    out_root.mkdir(parents=True, exist_ok=True)
    for proto in PROTO_FILES:
        args = [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(REPO_ROOT / proto),
        ]
        code = protoc.main(args)
        if code != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {code}); see its message above")
    return [out_root / path for proto in PROTO_FILES for path in generated_paths(proto)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for written in generate(Path(tmp)):
            relative = written.relative_to(tmp)
            shutil.copyfile(written, REPO_ROOT / relative)
            print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
