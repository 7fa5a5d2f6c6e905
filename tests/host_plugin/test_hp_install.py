"""`ttt-studio install-plugin`: layouts per host, the Blender manifest and plugin wheel, the pip download
arguments and the gencode fallback (pip itself is replaced by a recording runner: downloading is pip's
job), regeneration of the stubs, and the vendored copy importing on its own. Installs into tmp only.

TTT_TEST_NETWORK=1 adds a real run: download the cp39 wheels from PyPI, install the Nuke plugin for
Python 3.9 and generate a shot from a real Python 3.9 interpreter (needs `python3.9` on PATH or pyenv).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hp_helpers import TOKEN

from host_plugin import install
from host_plugin.install import InstallError, install_plugin, plan_install
from protos.generate import without_tool_stamps

PROTOS_V1 = install.PROTOS / "ttt_studio" / "v1"


def _wheel(folder: Path, name: str, version: str, tag: str = "cp39-cp39-manylinux2014_x86_64") -> Path:
    """A small but real wheel file (a module and its dist-info)."""
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}/__init__.py", f"__version__ = {version!r}\n")
        archive.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n")
        archive.writestr(f"{name}-{version}.data/purelib/{name}_extra.py", "X = 1\n")
    return path


class FakePip:
    """Stands in for subprocess.run of pip: records the arguments, answers like pip would."""

    def __init__(self, has_new_runtimes: bool = True) -> None:
        self.has_new_runtimes = has_new_runtimes
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str], **kwargs: Any) -> Any:
        self.calls.append(list(args))
        if args[1:4] == ["-m", "pip", "download"]:
            dest = Path(args[args.index("--dest") + 1])
            wants_new = any(a.startswith("protobuf>=7") for a in args)
            if wants_new and not self.has_new_runtimes:
                return SimpleNamespace(
                    returncode=1,
                    stdout="",
                    stderr="ERROR: No matching distribution found for protobuf<8,>=7.35.1",
                )
            protobuf, grpc_version = ("7.36.2", "1.85.1") if wants_new else ("6.33.6", "1.80.1")
            for name, version in (
                ("grpcio", grpc_version),
                ("protobuf", protobuf),
                ("opentimelineio", "0.18.1"),
            ):
                _wheel(dest, name, version)
            return SimpleNamespace(returncode=0, stdout="Saved", stderr="")
        if args[1:4] == ["-m", "pip", "install"]:
            return SimpleNamespace(returncode=0, stdout="", stderr="")  # grpcio-tools: the venv's own is used
        return subprocess.run(args, **kwargs)  # protoc runs for real


def test_plans_check_their_input() -> None:
    with pytest.raises(InstallError, match="host must be one of"):
        plan_install("premiere")
    with pytest.raises(InstallError, match="3.9 .. 3.13"):
        plan_install("nuke", python_version="3.8")
    with pytest.raises(InstallError, match="not a wheel platform tag"):
        plan_install("nuke", platforms=["linux x86"])
    plan = plan_install("nuke", dest="/x", python_version="3.9", platforms=["manylinux2014_x86_64"])
    assert (plan.pip_python_version, plan.python_tag) == ("3.9.99", "cp39")
    assert plan_install("nuke", dest="/x", python_version="3.9.10").pip_python_version == "3.9.10"


def test_nuke_and_resolve_layouts_and_the_vendored_copy_imports_on_its_own(tmp_path: Path) -> None:
    nuke = install_plugin(plan_install("nuke", dest=str(tmp_path / "nuke"), download=False))
    root = tmp_path / "nuke"
    for rel in (
        "init.py",
        "menu.py",
        "lib/host_plugin/core/client.py",
        "lib/host_plugin/core/shot_job.py",
        "lib/host_plugin/hosts/nuke/panel.py",
        "lib/protos/ttt_studio/v1/ttt_studio_pb2_grpc.py",
    ):
        assert (root / rel).is_file(), rel
    assert (
        not (root / "lib/host_plugin/hosts/blender").exists()
        and not (root / "lib/host_plugin/install.py").exists()
    )
    assert nuke.gencode == "committed" and "not downloaded" in nuke.notes[0]

    install_plugin(plan_install("resolve", dest=str(tmp_path / "scripts"), download=False))
    launcher = tmp_path / "scripts" / "Edit" / "TTT Generate.py"
    assert (
        launcher.is_file()
        and (tmp_path / "scripts/ttt_studio/lib/host_plugin/hosts/resolve/script.py").is_file()
    )
    assert not list((tmp_path / "scripts" / "Edit").glob("*/"))  # Resolve's menu folder holds only the entry

    lib = tmp_path / "scripts" / "ttt_studio" / "lib"
    code = (
        f"import sys; sys.path.insert(0, {str(lib)!r}); import host_plugin.core.client as c, "
        "host_plugin.hosts.resolve.script, protos.ttt_studio.v1.ttt_studio_pb2 as pb; "
        f"assert c.__file__.startswith({str(lib)!r}) and pb.__file__.startswith({str(lib)!r}), c.__file__"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_blender_extension_manifest_and_plugin_wheel(tmp_path: Path) -> None:
    pip = FakePip()
    dest = tmp_path / "ext"
    report = install_plugin(plan_install("blender", dest=str(dest), python_version="3.11"), runner=pip)
    assert sorted(p.name for p in dest.glob("*.py")) == ["__init__.py", "ui.py", "vse.py"]
    manifest = tomllib.loads((dest / "blender_manifest.toml").read_text())
    assert (manifest["schema_version"], manifest["id"], manifest["type"]) == ("1.0.0", "ttt_studio", "add-on")
    assert manifest["blender_version_min"] == "4.2.0" and set(manifest["permissions"]) == {"network", "files"}
    assert manifest["platforms"] == ["linux-x64"] if sys.platform.startswith("linux") else True
    listed = manifest["wheels"]
    assert listed[0] == "./wheels/ttt_studio_host_plugin-0.1.0-py3-none-any.whl"
    assert {Path(w).name.split("-")[0] for w in listed} == {
        "ttt_studio_host_plugin",
        "grpcio",
        "protobuf",
        "opentimelineio",
    }
    for wheel in listed:
        assert (dest / wheel).is_file(), wheel
    assert report.gencode == "committed"

    own = dest / listed[0]
    with zipfile.ZipFile(own) as archive:
        names = set(archive.namelist())
        record = archive.read("ttt_studio_host_plugin-0.1.0.dist-info/RECORD").decode()
        for path, digest, size in csv.reader(io.StringIO(record)):
            if digest:
                data = archive.read(path)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={expected}" and int(size) == len(data), path
    assert {
        "host_plugin/core/client.py",
        "host_plugin/hosts/base.py",
        "protos/ttt_studio/v1/ttt_studio_pb2.py",
    } <= names
    assert not [n for n in names if n.startswith(("host_plugin/hosts/blender", "host_plugin/hosts/nuke"))]
    # the wheel alone provides the core (Blender installs it into the extension's site-packages)
    code = f"import sys; sys.path.insert(0, {str(own)!r}); import host_plugin.core.shot_job as s; assert s.__file__.startswith({str(own)!r})"
    assert subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True).returncode == 0


def test_pip_download_arguments_and_unpacked_wheels(tmp_path: Path) -> None:
    pip = FakePip()
    plan = plan_install(
        "nuke", dest=str(tmp_path / "nuke"), python_version="3.10", platforms=["manylinux2014_x86_64"]
    )
    report = install_plugin(plan, runner=pip)
    (protobuf_major, minor, patch), grpc_version = install.gencode_versions()
    (args,) = pip.calls
    assert args[:4] == [sys.executable, "-m", "pip", "download"] and "--only-binary=:all:" in args
    assert (
        args[args.index("--python-version") + 1] == "3.10.99"
        and args[args.index("--platform") + 1] == "manylinux2014_x86_64"
    )
    assert args[args.index("--dest") + 1] == str(tmp_path / "nuke" / "wheels")
    assert (
        f"protobuf>={protobuf_major}.{minor}.{patch},<{protobuf_major + 1}" in args
        and f"grpcio>={grpc_version}" in args
    )
    assert "numpy" in args and report.gencode == "committed"
    site = tmp_path / "nuke" / "site-packages"
    assert (site / "grpcio" / "__init__.py").is_file() and (
        site / "grpcio_extra.py"
    ).is_file()  # .data/purelib too


def test_old_python_falls_back_to_older_runtimes_and_checks_the_regenerated_gencode(tmp_path: Path) -> None:
    """No protobuf 7 for cp39: older wheels are taken and the stubs regenerated with the grpcio-tools of that
    grpcio. Here the 'downloaded' grpcio-tools is the venv's own (newer) one, whose gencode would demand a
    newer protobuf than the one chosen: install-plugin must refuse rather than ship stubs that fail."""
    pip = FakePip(has_new_runtimes=False)
    plan = plan_install("nuke", dest=str(tmp_path / "nuke"), python_version="3.9")
    with pytest.raises(
        InstallError,
        match=r"writes gencode for protobuf \d+\.\d+\.\d+, newer than the protobuf 6\.33\.6 wheel",
    ):
        install_plugin(plan, runner=pip)
    downloads = [c for c in pip.calls if c[1:4] == ["-m", "pip", "download"]]
    assert (
        len(downloads) == 2
        and install.COMPAT_PROTOBUF in downloads[1]
        and install.COMPAT_GRPCIO in downloads[1]
    )
    tools = [c for c in pip.calls if c[1:4] == ["-m", "pip", "install"]]
    assert tools and tools[0][-1] == "grpcio-tools==1.80.1" and "--target" in tools[0]


def test_other_pip_failures_are_reported(tmp_path: Path) -> None:
    def broken(args: list[str], **kwargs: Any) -> Any:
        return SimpleNamespace(returncode=2, stdout="", stderr="ERROR: network is unreachable")

    with pytest.raises(
        InstallError, match="(?s)pip download failed for Python 3.11 on .*network is unreachable"
    ):
        install_plugin(plan_install("resolve", dest=str(tmp_path / "r")), runner=broken)


def test_regenerating_the_stubs_with_this_grpcio_tools_reproduces_the_committed_ones(tmp_path: Path) -> None:
    """The same code as protos/generate.py writes, up to the stamps naming the tools' release."""
    written = install.regenerate_protos(tmp_path / "protos")
    assert [p.name for p in written] == ["ttt_studio_pb2.py", "ttt_studio_pb2.pyi", "ttt_studio_pb2_grpc.py"]
    for path in written:
        committed = (PROTOS_V1 / path.name).read_text()
        assert without_tool_stamps(path.read_text()) == without_tool_stamps(committed), path.name


def test_cli_prints_what_it_did(tmp_path: Path, capsys: Any) -> None:
    from host_plugin import cli

    assert (
        cli.main(
            [
                "install-plugin",
                "nuke",
                "--dest",
                str(tmp_path / "n"),
                "--no-download",
                "--python-version",
                "3.9",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        f"installed the nuke plugin into {tmp_path / 'n'}" in out
        and "Python 3.9 (cp39)" in out
        and "pluginAddPath" in out
    )
    assert cli.main(["install-plugin", "nuke", "--dest", str(tmp_path / "n"), "--python-version", "2.7"]) == 2
    assert "3.9 .. 3.13" in capsys.readouterr().err


def _python39() -> str:
    """A working Python 3.9 (pyenv shims that are not activated are skipped)."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.9*/bin/python3.9")) + [
        shutil.which("python3.9") or ""
    ]
    for candidate in map(str, candidates):
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return ""


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("TTT_TEST_NETWORK") != "1", reason="set TTT_TEST_NETWORK=1 to download wheels from PyPI"
)
@pytest.mark.skipif(not _python39(), reason="needs a Python 3.9 interpreter (Nuke 14's Python)")
def test_real_install_for_python39_generates_a_shot(hp_server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "nuke39"
    report = install_plugin(plan_install("nuke", dest=str(dest), python_version="3.9"))
    assert report.gencode == "regenerated"
    code = f"""
import runpy, sys
runpy.run_path({str(dest / "init.py")!r})
from host_plugin.core.client import TTTClient
from host_plugin.core.requests import ShotRequest
from host_plugin.core.shot_job import GenerationSettings, generate_shot
client = TTTClient({hp_server.address!r}, token={TOKEN!r})
client.connect()
request = ShotRequest("v0.i1.gap", "gap", "V1", 0, 86430, 12, "24000/1001", prompt="A red ball rolls.")
result = generate_shot(client, request, GenerationSettings({str(tmp_path / "out")!r}, height=16, width=16, steps=1, guidance_scale=1.0))
assert result.frame_count >= 12, result
print(sys.version_info[:2], result.job_id)
"""
    res = subprocess.run([_python39(), "-I", "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(3, 9)" in res.stdout
