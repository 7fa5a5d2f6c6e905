"""server.bench_stream end to end on a few small frames: a real server process streams exactly the bytes
that are on disk, and the report has every row of the table."""

from __future__ import annotations

import json
from pathlib import Path

from server import bench_stream


def test_bench_stream_runs_and_streams_the_files_bytes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["--frames", "3", "--height", "32", "--width", "48", "--repeats", "1", "--latency-repeats", "1"]
    assert bench_stream.main([*args, "--tmp", str(tmp_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames"]["count"] == 3 and (report["frames"]["width"], report["frames"]["height"]) == (
        48,
        32,
    )
    for cache in ("warm", "cold"):
        raw = report["raw"][cache]
        assert set(raw) == {"disk"} | {f"grpc_{k}" for k in bench_stream.CHUNKS_KIB}
        assert {r["bytes"] for r in raw.values()} == {report["frames"]["total_bytes"]}
        assert set(report["usable"][cache]) == {"disk", "grpc_mem", "grpc_files"}
        assert all(r["MB_per_s"] > 0 for r in raw.values())
    assert "fincore finds" in report["cold_note"] or "no fincore" in report["cold_note"]
    assert report["latency"]["overhead_s"] >= 0
    table = capsys.readouterr().out
    assert (
        "machine: " in table
        and "raw: FetchFrames, 1024 KiB chunks" in table
        and "usable: read + decode" in table
    )
    assert list(tmp_path.glob("ttt_bench_*")) == [], "the data dir is removed"
