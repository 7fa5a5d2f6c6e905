"""`ttt-studio install-plugin blender|nuke|resolve [--dest DIR] [--python-version X.Y] [--platform TAG]`.

Copies the host's plugin, the host-independent core (host_plugin) and the generated protos into the
host's folder, and downloads the client's wheels for the HOST's Python and platform with
`pip download --only-binary=:all: --python-version X --platform P` (never for this interpreter):

  blender  DEST is the extension folder (hosts/blender + blender_manifest.toml). host_plugin and protos
           travel as one pure-Python wheel built here; every wheel is listed in the manifest's `wheels`,
           which Blender installs itself. Build the .zip with `blender --command extension build`.
  nuke     DEST (default ~/.nuke/ttt_studio): init.py + menu.py, lib/ (host_plugin, protos) and
           site-packages/ (the wheels unpacked). Add `nuke.pluginAddPath("DEST")` to ~/.nuke/init.py.
  resolve  DEST is Resolve's Fusion/Scripts folder: Edit/TTT Generate.py (the Workspace > Scripts entry)
           and ttt_studio/ (lib/, site-packages/), a folder Resolve's menu does not list.

Protobuf gencode: the committed ttt_studio_pb2.py demands a protobuf runtime at least as new as the
protoc that wrote it (and ttt_studio_pb2_grpc.py a grpcio at least as new as its grpcio-tools). When no
such wheel exists for the host's Python (protobuf 7.x and grpcio >= 1.81 have no cp39 wheels, so Nuke
14 cannot have them), the newest wheels that do exist are taken and the vendored stubs are regenerated
from the .proto with the grpcio-tools release matching the chosen grpcio, whose protoc is no newer than
that protobuf. The wire format is the same; only the generated Python differs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
HOST_PLUGIN = ROOT / "host_plugin"
PROTOS = ROOT / "protos"
PROTO_REL = "ttt_studio/v1/ttt_studio.proto"
HOSTS = ("blender", "nuke", "resolve")
PLUGIN_VERSION = "0.1.0"
WHEEL_NAME = "ttt_studio_host_plugin"
# the client's runtime needs per host (Blender bundles numpy; none needs OpenEXR: hosts write the EXRs)
HOST_PACKAGES: Dict[str, Tuple[str, ...]] = {
    "blender": ("grpcio", "protobuf", "opentimelineio>=0.17,<0.19"),
    "nuke": ("grpcio", "protobuf", "opentimelineio>=0.17,<0.19", "numpy"),
    "resolve": ("grpcio", "protobuf", "opentimelineio>=0.17,<0.19", "numpy"),
}
DEFAULT_PYTHON = {"blender": "3.11", "nuke": "3.11", "resolve": "3.11"}
# oldest runtimes the regenerated (compat) stubs are made for: runtime_version exists from protobuf 5.26,
# and the stubs pass `_registered_method`, which grpcio has since 1.64
COMPAT_PROTOBUF = "protobuf>=5.26.1,<7"
COMPAT_GRPCIO = "grpcio>=1.66"
_PY_VERSION = re.compile(r"^3\.(\d{1,2})(\.\d{1,2})?$")
_GENCODE = re.compile(r"ValidateProtobufRuntimeVersion\(\s*[\w.]+,\s*(\d+),\s*(\d+),\s*(\d+),")
_GRPC_GENERATED = re.compile(r"^GRPC_GENERATED_VERSION = '([\d.]+)'", re.MULTILINE)
_ABS_IMPORT = re.compile(r"^from ttt_studio\.v1 import (\w+_pb2) as (\w+)$", re.MULTILINE)
_NO_MATCH = ("No matching distribution", "Could not find a version that satisfies")

Runner = Callable[
    ..., Any
]  # subprocess.run-like: runner(args, capture_output=True, text=True) -> .returncode/.stdout/.stderr


class InstallError(RuntimeError):
    """install-plugin could not do what was asked; the message says what and how to fix it."""


@dataclass(frozen=True)
class InstallPlan:
    host: str
    dest: Path
    python_version: str  # as given: "3.9" or "3.9.10"
    platforms: Tuple[str, ...]
    download: bool = True

    @property
    def pip_python_version(self) -> str:
        """X.Y becomes X.Y.99 for pip: pip reads "3.9" as 3.9.0, and some packages (opentimelineio 0.18
        declares requires-python '>3.9.0') would then be refused for every 3.9.x host."""
        return self.python_version if self.python_version.count(".") == 2 else f"{self.python_version}.99"

    @property
    def python_tag(self) -> str:
        major, minor = self.python_version.split(".")[:2]
        return f"cp{major}{minor}"


@dataclass
class InstallReport:
    plan: InstallPlan
    files: List[Path] = field(default_factory=list)
    wheels: List[Path] = field(default_factory=list)
    gencode: str = "committed"  # or "regenerated"
    notes: List[str] = field(default_factory=list)


def gencode_versions(proto_dir: Path = PROTOS / "ttt_studio" / "v1") -> Tuple[Tuple[int, int, int], str]:
    """((major, minor, patch) of protobuf the committed _pb2.py demands, grpcio version _pb2_grpc.py demands)."""
    pb2 = (proto_dir / "ttt_studio_pb2.py").read_text(encoding="utf-8")
    grpc_text = (proto_dir / "ttt_studio_pb2_grpc.py").read_text(encoding="utf-8")
    match = _GENCODE.search(pb2)
    protobuf = tuple(int(v) for v in match.groups()) if match else (0, 0, 0)
    grpc_match = _GRPC_GENERATED.search(grpc_text)
    return protobuf, (grpc_match.group(1) if grpc_match else "0")  # type: ignore[return-value]


def default_platforms() -> Tuple[str, ...]:
    """pip platform tags for this machine (the host usually runs where install-plugin runs)."""
    machine = platform.machine().lower()
    if sys.platform.startswith("linux"):
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        return (f"manylinux2014_{arch}", f"manylinux_2_28_{arch}")
    if sys.platform == "darwin":
        return ("macosx_11_0_arm64",) if machine == "arm64" else ("macosx_10_15_x86_64",)
    return ("win_amd64",)


def default_dest(host: str) -> Path:
    home = Path.home()
    if host == "blender":
        return Path.cwd() / "dist" / "blender" / "ttt_studio"
    if host == "nuke":
        return home / ".nuke" / "ttt_studio"
    if sys.platform == "darwin":
        return home / "Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts"
    if sys.platform.startswith("win"):
        return (
            Path(os.environ.get("APPDATA", home)) / "Blackmagic Design/DaVinci Resolve/Support/Fusion/Scripts"
        )
    return home / ".local/share/DaVinciResolve/Fusion/Scripts"


def plan_install(
    host: str,
    dest: Optional[str] = None,
    python_version: Optional[str] = None,
    platforms: Optional[Sequence[str]] = None,
    download: bool = True,
) -> InstallPlan:
    if host not in HOSTS:
        raise InstallError(f"host must be one of {HOSTS}, got {host!r}")
    version = python_version or DEFAULT_PYTHON[host]
    match = _PY_VERSION.match(version)
    if not match or not 9 <= int(match.group(1)) <= 13:
        raise InstallError(f"--python-version must be 3.9 .. 3.13 (X.Y or X.Y.Z), got {version!r}")
    tags = tuple(platforms) if platforms else default_platforms()
    for tag in tags:
        if not re.match(r"^[a-z0-9_]+$", tag):
            raise InstallError(f"--platform {tag!r} is not a wheel platform tag such as manylinux2014_x86_64")
    return InstallPlan(host, Path(dest).expanduser() if dest else default_dest(host), version, tags, download)


# ---------------------------------------------------------------------------------------- wheels


def pip_download(
    plan: InstallPlan, requirements: Sequence[str], wheel_dir: Path, runner: Runner = subprocess.run
) -> Tuple[bool, str]:
    """`pip download` binary wheels for the host's Python and platform; (ok, pip's output)."""
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(wheel_dir)]
    args += ["--python-version", plan.pip_python_version, "--implementation", "cp"]
    for tag in plan.platforms:
        args += ["--platform", tag]
    args += list(requirements)
    log.info("running %s", " ".join(args))
    res = runner(args, capture_output=True, text=True)
    return res.returncode == 0, (res.stdout or "") + (res.stderr or "")


def download_wheels(
    plan: InstallPlan, wheel_dir: Path, runner: Runner = subprocess.run
) -> Tuple[List[Path], str]:
    """Download the host's wheels; returns (wheel paths, "committed" | "regenerate").

    First with runtimes new enough for the committed gencode; when pip finds none for this Python, with
    the newest runtimes that exist (the stubs are then regenerated to match them).
    """
    (pb_major, pb_minor, pb_patch), grpc_version = gencode_versions()
    others = [p for p in HOST_PACKAGES[plan.host] if not p.startswith(("grpcio", "protobuf"))]
    exact = [f"protobuf>={pb_major}.{pb_minor}.{pb_patch},<{pb_major + 1}", f"grpcio>={grpc_version}"]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    ok, output = pip_download(plan, exact + others, wheel_dir, runner)
    mode = "committed"
    if not ok:
        if not any(text in output for text in _NO_MATCH):
            raise InstallError(
                f"pip download failed for Python {plan.python_version} on {plan.platforms}:\n{output[-3000:]}"
            )
        log.info(
            "no protobuf>=%d.%d.%d / grpcio>=%s wheels for Python %s; using older runtimes and regenerating the stubs",
            pb_major,
            pb_minor,
            pb_patch,
            grpc_version,
            plan.python_version,
        )
        for stale in wheel_dir.glob("*.whl"):
            stale.unlink()
        ok, output = pip_download(plan, [COMPAT_PROTOBUF, COMPAT_GRPCIO] + others, wheel_dir, runner)
        if not ok:
            raise InstallError(
                f"pip download found no usable grpcio/protobuf wheels for Python {plan.python_version} on "
                f"{plan.platforms}:\n{output[-3000:]}"
            )
        mode = "regenerate"
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise InstallError(f"pip download reported success but left no wheels in {wheel_dir}")
    return wheels, mode


def wheel_version(wheels: Sequence[Path], project: str) -> str:
    """Version of `project` among downloaded wheel files (name-version-...whl)."""
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        if name.lower().replace("_", "-") == project:
            return version
    raise InstallError(f"no {project} wheel among {[w.name for w in wheels]}")


def regenerate_protos(
    out_root: Path, tools_path: Optional[Path] = None, runner: Runner = subprocess.run
) -> List[Path]:
    """Run grpc_tools.protoc on the .proto into out_root/ttt_studio/v1 (package-relative imports, as
    protos/generate.py writes them). tools_path: a folder holding a grpcio-tools release (pip --target);
    None uses this interpreter's grpcio-tools."""
    target = out_root / "ttt_studio" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, os; from grpc_tools import protoc; "
        "inc = os.path.join(os.path.dirname(protoc.__file__), '_proto'); "
        f"sys.exit(protoc.main(['protoc', '-I{PROTOS}', '-I' + inc, '--python_out={out_root}', "
        f"'--pyi_out={out_root}', '--grpc_python_out={out_root}', '{PROTO_REL}']))"
    )
    env = dict(os.environ)
    if tools_path is not None:
        env["PYTHONPATH"] = str(tools_path)
    res = runner([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise InstallError(
            f"protoc failed regenerating the stubs:\n{(res.stdout or '') + (res.stderr or '')}"
        )
    written = []
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
        path = target / f"ttt_studio{suffix}"
        text = path.read_text(encoding="utf-8")
        path.write_text(_ABS_IMPORT.sub(r"from . import \1 as \2", text), encoding="utf-8")
        written.append(path)
    for init in (out_root / "__init__.py", out_root / "ttt_studio" / "__init__.py", target / "__init__.py"):
        init.touch()
    return written


def compat_protos(out_root: Path, wheels: Sequence[Path], runner: Runner = subprocess.run) -> str:
    """Regenerate the stubs with the grpcio-tools of the chosen grpcio; check the protobuf they demand."""
    grpc_version = wheel_version(wheels, "grpcio")
    protobuf_version = wheel_version(wheels, "protobuf")
    with tempfile.TemporaryDirectory(prefix="ttt_grpc_tools_") as tools:
        args = [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--target", tools]
        res = runner(args + [f"grpcio-tools=={grpc_version}"], capture_output=True, text=True)
        if res.returncode != 0:
            raise InstallError(
                f"could not get grpcio-tools=={grpc_version} to regenerate the stubs:\n{res.stderr}"
            )
        regenerate_protos(out_root, Path(tools), runner)
    (major, minor, patch), _ = gencode_versions(out_root / "ttt_studio" / "v1")
    have = tuple(int(p) for p in re.findall(r"\d+", protobuf_version)[:3])
    if (major, minor, patch) > have:
        raise InstallError(
            f"grpcio-tools {grpc_version} writes gencode for protobuf {major}.{minor}.{patch}, newer than the "
            f"protobuf {protobuf_version} wheel for this Python; pass an older grpcio requirement"
        )
    return f"stubs regenerated with grpcio-tools {grpc_version} (gencode protobuf {major}.{minor}.{patch}) for protobuf {protobuf_version}, grpcio {grpc_version}"


# ---------------------------------------------------------------------------------------- copying


def _core_files(include_hosts: Sequence[str]) -> List[Tuple[Path, str]]:
    """(source, relative destination) of host_plugin's core, base host, fill, and the chosen hosts."""
    files = []
    for path in sorted(HOST_PLUGIN.rglob("*")):
        rel = path.relative_to(ROOT)
        parts = rel.parts
        if "__pycache__" in parts or not path.is_file() or path.suffix not in (".py", ".toml"):
            continue
        if len(parts) > 3 and parts[1] == "hosts" and parts[2] not in include_hosts:
            continue
        if parts[-1] in ("install.py", "cli.py") and len(parts) == 2:
            continue  # build-side tools, not needed inside a host
        files.append((path, rel.as_posix()))
    return files


def _proto_files(proto_root: Optional[Path]) -> List[Tuple[Path, str]]:
    root = proto_root or PROTOS
    files = [
        (root / "__init__.py", "protos/__init__.py"),
        (root / "ttt_studio" / "__init__.py", "protos/ttt_studio/__init__.py"),
    ]
    v1 = root / "ttt_studio" / "v1"
    for name in ("__init__.py", "ttt_studio_pb2.py", "ttt_studio_pb2.pyi", "ttt_studio_pb2_grpc.py"):
        files.append((v1 / name, f"protos/ttt_studio/v1/{name}"))
    files.append((PROTOS / "ttt_studio" / "v1" / "ttt_studio.proto", "protos/ttt_studio/v1/ttt_studio.proto"))
    return [(src, rel) for src, rel in files if src.exists()]


def _copy(files: Sequence[Tuple[Path, str]], dest: Path, report: InstallReport) -> None:
    for src, rel in files:
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        report.files.append(out)


def build_plugin_wheel(wheel_dir: Path, proto_root: Optional[Path] = None) -> Path:
    """A pure-Python wheel of host_plugin (core, base host, fill) and protos, for Blender's wheel list."""
    files = [(s, r) for s, r in _core_files(()) if s.suffix == ".py"] + _proto_files(proto_root)
    name = f"{WHEEL_NAME}-{PLUGIN_VERSION}-py3-none-any.whl"
    dist_info = f"{WHEEL_NAME}-{PLUGIN_VERSION}.dist-info"
    meta = {
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {WHEEL_NAME}\nVersion: {PLUGIN_VERSION}\n"
        "Summary: ttt-studio host plugin core and wire protos (built by ttt-studio install-plugin)\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: ttt-studio install-plugin\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/top_level.txt": "host_plugin\nprotos\n",
    }
    wheel_dir.mkdir(parents=True, exist_ok=True)
    path = wheel_dir / name
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        entries = [(rel, src.read_bytes()) for src, rel in files] + [(k, v.encode()) for k, v in meta.items()]
        for rel, data in entries:
            archive.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([rel, f"sha256={digest}", len(data)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        archive.writestr(f"{dist_info}/RECORD", record.getvalue())
    return path


def unpack_wheels(wheels: Sequence[Path], site: Path) -> None:
    """Unpack wheels into a folder put on the host's sys.path (what pip install --target does for
    wheels without scripts); *.data/purelib and platlib land in the folder itself."""
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                parts = Path(member).parts
                if ".." in parts or Path(member).is_absolute():
                    raise InstallError(f"wheel {wheel.name} has an unsafe member {member!r}")
                if parts and parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue
                    out = site.joinpath(*parts[2:])
                else:
                    out = site / member
                if member.endswith("/"):
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def write_blender_manifest(
    template: Path, out: Path, wheels: Sequence[str], platforms: Sequence[str]
) -> None:
    """The extension's manifest with `wheels` (and `platforms` when a wheel is platform-specific)."""
    text = template.read_text(encoding="utf-8")
    listed = ",\n".join(f'  "./wheels/{name}"' for name in wheels)
    text, count = re.subn(r"(?ms)^wheels = \[.*?^\]", f"wheels = [\n{listed},\n]", text)
    if count != 1:
        raise InstallError(f"{template}: expected one `wheels = [...]` list to fill, found {count}")
    blender_platforms = sorted({_blender_platform(p) for p in platforms} - {""})
    if blender_platforms and any(not n.endswith("-none-any.whl") for n in wheels):
        line = "platforms = [" + ", ".join(f'"{p}"' for p in blender_platforms) + "]"
        text, count = re.subn(r"(?m)^#?\s*platforms = \[.*\]$", line, text)
        if count == 0:  # top-level keys must come before the first [table]
            text = re.sub(r"(?m)^wheels = \[", line + "\nwheels = [", text, count=1)
    out.write_text(text, encoding="utf-8")


def _blender_platform(tag: str) -> str:
    if tag.startswith("manylinux") and tag.endswith("x86_64"):
        return "linux-x64"
    if tag.startswith("manylinux") and tag.endswith("aarch64"):
        return "linux-arm64"
    if tag.startswith("macosx") and tag.endswith("arm64"):
        return "macos-arm64"
    if tag.startswith("macosx"):
        return "macos-x64"
    if tag == "win_amd64":
        return "windows-x64"
    return ""


NUKE_INIT = '''"""ttt-studio plugin for Nuke (written by `ttt-studio install-plugin nuke`): puts its libraries on sys.path."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
for _sub in ("lib", "site-packages"):
    _path = os.path.join(_here, _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)
'''

RESOLVE_LAUNCHER = '''"""TTT Generate: fill gaps / markers of the current timeline with generated shots (ttt-studio).

Written by `ttt-studio install-plugin resolve`; runs from Workspace > Scripts > Edit, or outside Resolve
(Studio) with DaVinciResolveScript on PYTHONPATH: python "TTT Generate.py" --server HOST:PORT --no-ui
"""
import os
import sys

_support = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ttt_studio")
for _sub in ("lib", "site-packages"):
    _path = os.path.join(_support, _sub)
    if _path not in sys.path:
        sys.path.insert(0, _path)

from host_plugin.hosts.resolve.script import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], globals().get("resolve"), globals().get("fu"), globals().get("bmd")))
'''


def install_plugin(plan: InstallPlan, runner: Runner = subprocess.run) -> InstallReport:
    """Do the plan: copy the plugin, get the wheels (unless plan.download is False), write host files."""
    report = InstallReport(plan)
    dest = plan.dest
    dest.mkdir(parents=True, exist_ok=True)
    if plan.host == "blender":
        root, lib, wheel_dir = dest, None, dest / "wheels"
    elif plan.host == "nuke":
        root, lib, wheel_dir = dest, dest / "lib", dest / "wheels"
    else:
        root, lib, wheel_dir = (
            dest / "ttt_studio",
            dest / "ttt_studio" / "lib",
            dest / "ttt_studio" / "wheels",
        )
    wheels: List[Path] = []
    proto_root: Optional[Path] = None
    with tempfile.TemporaryDirectory(prefix="ttt_protos_") as scratch:
        if plan.download:
            if wheel_dir.exists():
                shutil.rmtree(wheel_dir)
            wheels, mode = download_wheels(plan, wheel_dir, runner)
            if mode == "regenerate":
                proto_root = Path(scratch) / "protos"
                report.notes.append(compat_protos(proto_root, wheels, runner))
                report.gencode = "regenerated"
        else:
            report.notes.append(
                "wheels not downloaded (--no-download): install grpcio, protobuf and opentimelineio "
                f"for Python {plan.python_version} into the host yourself"
            )
        if plan.host == "blender":
            blender_dir = HOST_PLUGIN / "hosts" / "blender"
            for src in sorted(blender_dir.glob("*.py")):
                _copy([(src, src.name)], root, report)
            own = build_plugin_wheel(wheel_dir, proto_root)
            report.files.append(own)
            names = [own.name] + [w.name for w in wheels]
            write_blender_manifest(
                blender_dir / "blender_manifest.toml", root / "blender_manifest.toml", names, plan.platforms
            )
            report.files.append(root / "blender_manifest.toml")
        else:
            assert lib is not None
            if lib.exists():
                shutil.rmtree(lib)
            _copy(_core_files((plan.host,)), lib, report)
            _copy([(s, r[len("protos/") :]) for s, r in _proto_files(proto_root)], lib / "protos", report)
            if wheels:
                unpack_wheels(wheels, root / "site-packages")
            if plan.host == "nuke":
                (root / "init.py").write_text(NUKE_INIT, encoding="utf-8")
                shutil.copyfile(HOST_PLUGIN / "hosts" / "nuke" / "menu.py", root / "menu.py")
                report.files += [root / "init.py", root / "menu.py"]
            else:
                launcher = dest / "Edit" / "TTT Generate.py"
                launcher.parent.mkdir(parents=True, exist_ok=True)
                launcher.write_text(RESOLVE_LAUNCHER, encoding="utf-8")
                report.files.append(launcher)
    report.wheels = [wheel_dir / w.name for w in wheels]
    return report


def register(subparsers: Any) -> None:
    """Add `install-plugin` to a `ttt-studio` subparsers object."""
    if "install-plugin" in getattr(subparsers, "choices", {}):
        return
    p = subparsers.add_parser(
        "install-plugin",
        help="install the Blender / Nuke / Resolve plugin and its wheels",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("host", choices=HOSTS)
    p.add_argument("--dest", default=None, help="target folder (default: the host's usual plugin folder)")
    p.add_argument(
        "--python-version",
        default=None,
        help="the HOST's Python, X.Y or X.Y.Z (default: blender/nuke/resolve 3.11; Nuke 14: 3.9, Nuke 15: "
        "3.10, Blender 5.1: 3.13)",
    )
    p.add_argument(
        "--platform",
        action="append",
        default=None,
        help=f"wheel platform tag, repeatable (default here: {' '.join(default_platforms())})",
    )
    p.add_argument("--no-download", action="store_true", help="copy files only; do not download wheels")
    p.set_defaults(func=run_install)


def run_install(args: argparse.Namespace) -> int:
    try:
        plan = plan_install(args.host, args.dest, args.python_version, args.platform, not args.no_download)
        report = install_plugin(plan)
    except InstallError as exc:
        print(f"ttt-studio install-plugin: {exc}", file=sys.stderr)
        return 2
    print(f"installed the {plan.host} plugin into {plan.dest}")
    print(f"  Python {plan.python_version} ({plan.python_tag}), platforms {', '.join(plan.platforms)}")
    print(f"  {len(report.files)} files copied or written")
    for wheel in report.wheels:
        print(f"  wheel {wheel.name}")
    print(f"  protobuf stubs: {report.gencode}")
    for note in report.notes:
        print(f"  note: {note}")
    if plan.host == "blender":
        print(
            f"  next: blender --command extension build --source-dir '{plan.dest}', then install the .zip "
            "(Preferences > Get Extensions > Install from Disk), or copy the folder into "
            "~/.config/blender/<version>/extensions/user_default/"
        )
    elif plan.host == "nuke":
        print(
            f"  next: add nuke.pluginAddPath({str(plan.dest)!r}) to ~/.nuke/init.py; then TTT > Generate..."
        )
    else:
        print("  next: restart Resolve (Studio); Workspace > Scripts > Edit > TTT Generate")
    return 0
