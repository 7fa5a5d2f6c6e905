"""No committed file names a path of one particular machine: a home, work or temp folder.

Such a path works on the machine that wrote it and nowhere else (a config's run folder under a temp dir,
a doc that cds into one user's home folder), and it leaks how that machine is laid out. Code that needs a scratch
folder asks for one (tempfile, pytest's tmp_path); docs and configs use paths relative to the repository
(runs/..., data/..., out/...) or placeholders (SITE_DIR).

What counts as a machine path: an absolute path that starts a token (not the tail of a URL or of a
relative path such as `configs/work/`) into the folders home/<user>, root, work, tmp, var/tmp,
var/folders or Users/<name> at the top of a file system, or into a Windows drive's Users folder (either
slash, escaped or not). A bare temp folder named in prose names no file and passes. Binary files (a NUL
byte, or not UTF-8) are skipped.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A path must start a token: not after a letter, digit, '_', '.', '-', '~', '$' or '/' (so URLs and
# relative paths pass), except right after "file://". The folder names are written as (?:name) so that
# this file's own text does not match them.
_START = r"(?:(?<![\w.\-~$/])|(?<=file://))"
_NAME = r"[^/\s'\"`)]+"
_UNIX = (  # the folders under the file system's root, after its leading "/"
    rf"(?:home)/{_NAME}/",
    r"(?:root)/",
    r"(?:work)/",
    rf"(?:tmp)/{_NAME}",
    rf"var/(?:tmp)/{_NAME}",
    r"var/(?:folders)/",
    rf"(?:Users)/{_NAME}/",
)
_SEP = r"(?:\\\\|\\|/)"  # a Windows separator: \, an escaped \\, or /
_WINDOWS = rf"(?<![\w])[A-Za-z]:{_SEP}(?:Users){_SEP}"
_REST = r"[^\s'\"`)\]]*"  # the rest of the path, for the report
MACHINE_PATH = re.compile(
    rf"(?:{_START}/(?:{'|'.join(_UNIX)})|{_WINDOWS}){_REST}",
    re.IGNORECASE,
)
BINARY_PROBE = 8192  # bytes read to tell a binary file (a NUL byte among them)


def machine_paths(text: str) -> list[tuple[int, str]]:
    """(line number, matched path) of every machine path in `text`, in order."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in MACHINE_PATH.finditer(text)]


def tracked_text_files(root: Path) -> list[Path]:
    """Every file git tracks under `root` that reads as text."""
    done = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"not a git checkout ({done.stderr.strip()}): no tracked files to scan")
    files = []
    for name in filter(None, done.stdout.split("\0")):
        path = root / name
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        with path.open("rb") as f:
            if b"\0" in f.read(BINARY_PROBE):
                continue
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def test_no_tracked_file_names_a_machine_path() -> None:
    files = tracked_text_files(ROOT)
    assert len(files) > 100, f"only {len(files)} tracked text files found under {ROOT}"
    found = [
        f"{path.relative_to(ROOT)}:{line}: {hit}"
        for path in files
        for line, hit in machine_paths(path.read_text(encoding="utf-8"))
    ]
    assert not found, "absolute paths of one machine in committed files (use relative paths):\n" + "\n".join(
        found
    )


# Planted paths are assembled from parts so that this file itself stays clean.
T, H, W, U = "/" + "tmp", "/" + "home", "/" + "work", "Us" + "ers"


@pytest.mark.parametrize(
    "text",
    [
        f"run_dir: {T}/ttt-studio/train-tiny",
        f"export PYTHONPATH={T}/site:$PWD",
        f"cd {H}/alice/ttt-studio && make",
        "see /" + "root/.cache/pip",
        f"`{W}/main/.venv/bin/activate`",
        f'open("{T}/x.json")',
        f"file://{H}/bob/notes.md",
        f"/{U}/carol/Documents/plate.exr",
        f"C:\\{U}\\dave\\AppData",
        f'"C:\\\\{U}\\\\erin\\\\x"',
        f"c:/{U}/frank/x",
        "/var/" + "folders/xy/T/pytest-1",
        "/var/" + "tmp/build",
        f"({T}/out)",
    ],
)
def test_scanner_finds_a_planted_machine_path(text: str) -> None:
    assert machine_paths(f"first line\n{text}\n") != [], text
    assert machine_paths(f"first line\n{text}\n")[0][0] == 2


@pytest.mark.parametrize(
    "text",
    [
        "https://github.com/home/user/repo",  # a URL's path
        "https://example.org/tmp/file.txt",
        "configs/work/x.yaml and out/tmp/frames",  # relative paths
        "~/.config/blender/extensions",  # home-relative, the same on every machine
        "scratch output goes in /tmp",  # bare /tmp names no file
        "runs/default-base/model",
        "$TMPDIR/x",
        "/usr/local/cuda/bin/nvcc",  # a system location, not a home/work/temp folder
    ],
)
def test_scanner_passes_paths_that_are_not_one_machines(text: str) -> None:
    assert machine_paths(text) == []


def test_scanner_runs_on_a_planted_file(tmp_path: Path) -> None:
    """The whole scan, on a git checkout holding one clean and one planted file."""

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "clean.md").write_text("runs/x and https://example.org/tmp/y\n")
    (tmp_path / "planted.yaml").write_text(f"a: 1\nrun_dir: {T}/ttt/run\n")
    (tmp_path / "weights.bin").write_bytes(b"\0\1" + f"{T}/inside/binary".encode())
    git("add", "clean.md", "planted.yaml", "weights.bin")
    hits = {
        path.name: machine_paths(path.read_text(encoding="utf-8")) for path in tracked_text_files(tmp_path)
    }
    assert hits == {"clean.md": [], "planted.yaml": [(2, f"{T}/ttt/run")]}
