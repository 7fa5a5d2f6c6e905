"""Regenerate the Python code for protos/ttt_studio/v1/*.proto (committed beside the .proto).

    python -m protos.generate            # rewrite the committed files
    python -m protos.generate --out DIR  # write a copy under DIR (the up-to-date test uses this)

Regenerate after changing the .proto; a new grpcio-tools release alone does not make the committed code
stale (see ``without_tool_stamps``).

protoc runs with ``-I protos`` so the descriptor keeps its canonical name ``ttt_studio/v1/ttt_studio.proto``
(what reflection and other languages see); the absolute import that grpc_tools writes into the
``_pb2_grpc`` module is then made package-relative, so ``from protos.ttt_studio.v1 import ttt_studio_pb2``
works from the repository root and from an installed package alike.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILES = ("ttt_studio/v1/ttt_studio.proto",)
_ABS_IMPORT = re.compile(r"^from ttt_studio\.v1 import (\w+_pb2) as (\w+)$", re.MULTILINE)
# Where the code names the releases that wrote it: grpcio-tools stamps its own version (the oldest grpcio
# the stubs import with) and its bundled protoc's protobuf version (the oldest protobuf runtime). A newer
# patch release writes the same code with other stamps, so "up to date" compares the code without them;
# the committed stamps stay as old as possible for hosts with older wheels, and the import test checks
# that this environment's grpcio and protobuf accept them.
_TOOL_STAMPS = (
    (re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.MULTILINE), "GRPC_GENERATED_VERSION = <stamp>"),
    (re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE), "# Protobuf Python Version: <stamp>"),
    (
        re.compile(
            r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,"
        ),
        r"\1 <stamp>,",
    ),
)


def without_tool_stamps(text: str) -> str:
    """Generated code with the tool-release stamps blanked (see _TOOL_STAMPS)."""
    for pattern, replacement in _TOOL_STAMPS:
        text = pattern.sub(replacement, text)
    return text


def generate(out_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on PROTO_FILES, writing under out_root/<same relative folder>. Returns the files written."""
    import grpc_tools
    from grpc_tools import protoc

    out_root = Path(out_root)
    for rel in PROTO_FILES:
        (out_root / rel).parent.mkdir(parents=True, exist_ok=True)
    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *PROTO_FILES,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}; arguments: {args}")
    written: list[Path] = []
    for rel in PROTO_FILES:
        stem = out_root / rel[: -len(".proto")]
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            path = stem.parent / f"{stem.name}{suffix}"
            text = path.read_text(encoding="utf-8")
            fixed = _ABS_IMPORT.sub(r"from . import \1 as \2", text)
            if fixed != text:
                path.write_text(fixed, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: protos/)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
