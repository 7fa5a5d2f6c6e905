"""The committed generated code matches the .proto, and imports as a package."""

from __future__ import annotations

from pathlib import Path

from protos.generate import PROTO_ROOT, generate, without_tool_stamps


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert len(fresh) == 3
    for path in fresh:
        committed = PROTO_ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python -m protos.generate"
        assert without_tool_stamps(committed.read_text()) == without_tool_stamps(path.read_text()), (
            f"{committed} is stale: run python -m protos.generate"
        )


def test_only_tool_release_stamps_are_ignored() -> None:
    committed = (PROTO_ROOT / "ttt_studio/v1/ttt_studio_pb2_grpc.py").read_text()
    newer_tools = committed.replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '9")
    assert newer_tools != committed
    assert without_tool_stamps(newer_tools) == without_tool_stamps(committed)
    pb2 = (PROTO_ROOT / "ttt_studio/v1/ttt_studio_pb2.py").read_text()
    stamped = without_tool_stamps(pb2)
    assert "<stamp>" in stamped and "Domain.PUBLIC, <stamp>," in stamped
    assert without_tool_stamps(committed.replace("SubmitShot", "SubmitShots")) != without_tool_stamps(
        committed
    )


def test_generated_code_imports_as_a_package() -> None:
    from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
    from protos.ttt_studio.v1 import ttt_studio_pb2_grpc as pb_grpc

    assert pb.DESCRIPTOR.name == "ttt_studio/v1/ttt_studio.proto"
    assert pb.DESCRIPTOR.package == "ttt_studio.v1"
    service = pb.DESCRIPTOR.services_by_name["TTTStudio"]
    assert {m.name for m in service.methods} >= {
        "GetServerInfo",
        "SubmitShot",
        "UploadPlate",
        "WatchJob",
        "FetchFrames",
        "CancelJob",
        "ListJobs",
        "GetJobResult",
    }
    assert hasattr(pb_grpc, "TTTStudioStub")
    text = (PROTO_ROOT / "ttt_studio/v1/ttt_studio_pb2_grpc.py").read_text()
    assert "from . import ttt_studio_pb2" in text and "from ttt_studio.v1" not in text
