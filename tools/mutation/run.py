"""Mutation testing of the critical modules (issue #31) with mutmut 3, one module at a time.

    python tools/mutation/run.py [--jobs N] [--workdir DIR] MODULE...

MODULE is a key of ``tools/mutation/targets.toml`` (a path such as ``host_plugin/core/frame_math.py``).
For each module this builds a scratch copy of the working tree under ``WORKDIR/<module>`` (tracked and
untracked-but-not-ignored files, so new tests count before they are committed), writes a ``[tool.mutmut]``
section that mutates only that module and runs only its mapped tests, runs ``mutmut run`` there, and
writes ``summary.txt`` (counts and score) and ``survivors.txt`` (the diff of every mutant not killed).

Why a scratch copy: mutmut reads one ``[tool.mutmut]`` per directory, and the repository's pytest config
puts the repository root on ``sys.path`` (``pythonpath = ["."]``), which would import the original code
instead of the mutants; the copy drops that line and sets ``PYTHONPATH`` to the mutated tree, so test
subprocesses (the real server) run the mutants too.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS_FILE = REPO / "tools" / "mutation" / "targets.toml"
DEFAULT_WORKDIR = REPO / "build" / "mutation"
# every top-level package is copied into mutmut's tree so imports between them resolve to one place
PACKAGES = ("ttt_engine", "server", "protos", "host_plugin", "cuda")
ISOLATIONS = ("fork", "forkserver")
# pytest's `pythonpath = ["."]` line, dropped from the scratch copy (see the module docstring)
_PYTHONPATH_LINE = re.compile(r"^pythonpath\s*=.*$", re.MULTILINE)
# mutmut statuses that count as the tests noticing the mutant
KILLED_STATUSES = ("killed", "timeout", "segfault", "caught by type check")
NOT_RUN_STATUSES = ("skipped", "not checked")


@dataclass(frozen=True)
class Target:
    """One module to mutate and the tests that must notice a one-line bug in it."""

    module: str
    tests: tuple[str, ...]
    isolation: str
    deselect: tuple[str, ...] = ()


def load_targets(path: Path = TARGETS_FILE) -> dict[str, Target]:
    """Parse targets.toml; raises ValueError naming the entry and field when one is malformed."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    targets = {}
    for module, entry in raw.items():
        tests = entry.get("tests")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise ValueError(f"{path}: [{module!r}] needs tests = a non-empty list of paths, got {tests!r}")
        isolation = entry.get("isolation", "fork")
        if isolation not in ISOLATIONS:
            raise ValueError(f"{path}: [{module!r}] isolation must be one of {ISOLATIONS}, got {isolation!r}")
        deselect = entry.get("deselect", [])
        if not isinstance(deselect, list) or not all(isinstance(d, str) for d in deselect):
            raise ValueError(f"{path}: [{module!r}] deselect must be a list of test ids, got {deselect!r}")
        targets[module] = Target(module, tuple(tests), isolation, tuple(deselect))
    return targets


def _working_tree_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


def _mutmut_section(target: Target, tests: list[str]) -> str:
    module_glob = target.module + "*" if target.module.endswith("/") else target.module

    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{i}"' for i in items) + "]"

    selection = tests + [f"--deselect={d}" for d in target.deselect]

    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {toml_list(list(PACKAGES))}\n"
        f"only_mutate = {toml_list([module_glob])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(selection)}\n"
        f'process_isolation = "{target.isolation}"\n'
        "use_git_change_detection = false\n"
    )


def prepare(target: Target, workdir: Path) -> list[str]:
    """Fresh scratch copy for one target; returns the test paths that exist (missing ones are reported)."""
    if not (REPO / target.module).exists():
        raise FileNotFoundError(
            f"{target.module}: configured in {TARGETS_FILE.name} but not in this tree yet; nothing to mutate"
        )
    tests = [t for t in target.tests if (REPO / t.split("::")[0]).exists()]
    for t in sorted(set(target.tests) - set(tests)):
        print(f"note: {t} (mapped to {target.module}) does not exist; run without it", file=sys.stderr)
    if not tests:
        raise FileNotFoundError(f"{target.module}: none of its tests {list(target.tests)} exist")
    if workdir.exists():
        shutil.rmtree(workdir)
    for rel in _working_tree_files():
        dest = workdir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    pyproject = workdir / "pyproject.toml"
    text = _PYTHONPATH_LINE.sub("", pyproject.read_text(encoding="utf-8"))
    pyproject.write_text(text + _mutmut_section(target, tests), encoding="utf-8")
    # made now, not by mutmut: Python caches a sys.path entry that did not exist at start-up as "nothing
    # here", and the shared venv's editable install would then supply the unmutated packages
    (workdir / "mutants").mkdir()
    return tests


def _mutmut(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(workdir / "mutants"))
    mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    return subprocess.run(
        [mutmut, *args], cwd=workdir, env=env, text=True, capture_output=args[0] != "run", check=False
    )


def _python_in(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(workdir / "mutants"))
    return subprocess.run(
        [sys.executable, *args], cwd=workdir, env=env, text=True, capture_output=True, check=False
    )


def summarise(target: Target, workdir: Path, tests: list[str]) -> str:
    """Count mutmut's verdicts, write summary.txt and survivors.txt, return the summary."""
    listing = _mutmut(workdir, "results", "--all", "true").stdout
    statuses: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name:
            statuses[name] = status
    if not statuses:
        raise RuntimeError(f"{target.module}: mutmut reported no mutants; its output:\n{listing}")
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    tested = sum(n for s, n in counts.items() if s not in NOT_RUN_STATUSES)
    killed = sum(counts.get(s, 0) for s in KILLED_STATUSES)
    score = 100.0 * killed / tested if tested else 0.0
    summary = (
        f"module: {target.module}\ntests: {' '.join(tests)}\n"
        f"mutants: {len(statuses)}, tested: {tested}, killed: {killed}, score: {score:.1f}%\n"
        + "".join(f"  {s}: {n}\n" for s, n in sorted(counts.items()))
    )
    survivors = sorted(n for n, s in statuses.items() if s not in KILLED_STATUSES)
    # one process for all diffs (a `mutmut show` per survivor pays mutmut's start-up each time)
    show_all = (
        "import sys\nfrom mutmut.__main__ import show\nfor name in sys.argv[1:]:\n    show.callback(name)\n"
    )
    diffs = [_python_in(workdir, "-c", show_all, *survivors).stdout] if survivors else []
    (workdir / "summary.txt").write_text(summary, encoding="utf-8")
    (workdir / "survivors.txt").write_text("\n".join(diffs), encoding="utf-8")
    return summary


def _pytest_under_mutant(target: Target, mutated: Path, tests: list[str], mutant: str) -> int:
    """Exit status of the module's tests with `mutant` switched on ("" = the unmutated code)."""
    env = dict(os.environ, PYTHONPATH=str(mutated), MUTANT_UNDER_TEST=mutant)
    deselect = [f"--deselect={d}" for d in target.deselect]
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests, *deselect]
    return subprocess.run(cmd, cwd=mutated, env=env, capture_output=True, check=False).returncode


# --recheck --in-process: one pytest process runs the tests once per survivor, switching the mutant
# through MUTANT_UNDER_TEST (mutmut's trampolines read it on every call), so the start-up (torch, OTIO,
# numpy imports) is paid once instead of once per survivor
_IN_PROCESS = """
import contextlib, io, os, sys
import pytest
tests, names = sys.argv[1:sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1:]
def run(name):
    os.environ["MUTANT_UNDER_TEST"] = name
    with contextlib.redirect_stdout(io.StringIO()):
        return int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))
for name in ["", *names]:
    print(f"{name}\t{run(name)}", flush=True)
"""


def _pytest_in_process(target: Target, mutated: Path, tests: list[str], names: list[str]) -> list[int]:
    """Exit statuses of the tests for the unmutated code and then each of `names`, in one process."""
    env = dict(os.environ, PYTHONPATH=str(mutated))
    deselect = [f"--deselect={d}" for d in target.deselect]
    cmd = [sys.executable, "-c", _IN_PROCESS, *tests, *deselect, "--", *names]
    out = subprocess.run(cmd, cwd=mutated, env=env, capture_output=True, text=True, check=False).stdout
    codes = [int(line.rpartition("\t")[2]) for line in out.splitlines() if "\t" in line]
    if len(codes) != len(names) + 1:
        raise RuntimeError(f"{target.module}: the in-process recheck stopped after {len(codes)} runs:\n{out}")
    return codes


def recheck(
    target: Target, workdir: Path, patterns: list[str] | None = None, in_process: bool = False
) -> str:
    """Run the module's tests as they are now against each survivor of the last full run.

    Cheaper than a fresh full run for slow modules: the current test files are copied into the mutated
    tree and pytest runs once per survivor with mutmut's MUTANT_UNDER_TEST switch, new *_mutants.py
    files first (in_process: all in one pytest process, for tests that keep no state between runs).
    First the unmutated code must pass them all. Writes and returns recheck.txt.
    """
    survivors_file = workdir / "survivors.txt"
    if not survivors_file.exists():
        raise FileNotFoundError(f"{survivors_file}: no full run to recheck; run without --recheck first")
    names = [
        line[2:].rpartition(": ")[0]
        for line in survivors_file.read_text(encoding="utf-8").splitlines()
        if line.startswith("# ")
    ]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    mutated = workdir / "mutants"
    for rel in _working_tree_files():
        if rel.startswith("tests/"):
            shutil.copy2(REPO / rel, mutated / rel)
    existing = [t for t in target.tests if (REPO / t.split("::")[0]).exists()]
    tests = sorted(existing, key=lambda t: not t.endswith("_mutants.py"))
    if in_process:
        unmutated, *codes = _pytest_in_process(target, mutated, tests, names)
    else:
        unmutated, codes = _pytest_under_mutant(target, mutated, tests, ""), []
    if unmutated != 0:
        raise RuntimeError(f"{target.module}: its tests fail on the unmutated code; fix them first")
    lines = []
    for i, name in enumerate(names):
        code = codes[i] if in_process else _pytest_under_mutant(target, mutated, tests, name)
        verdict = {0: "survived", 1: "killed"}.get(code, f"error (pytest exit {code})")
        lines.append(f"{name}: {verdict}")
        print(f"  {name}: {verdict}", flush=True)
    killed = sum(line.endswith(": killed") for line in lines)
    report = (
        f"module: {target.module}\ntests: {' '.join(tests)}\nunmutated code: all pass\n"
        f"survivors of the last full run: {len(names)}, killed now: {killed}\n" + "\n".join(lines) + "\n"
    )
    (workdir / "recheck.txt").write_text(report, encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="+", metavar="MODULE", help="keys of tools/mutation/targets.toml")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel mutant workers")
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="scratch root (default build/mutation)"
    )
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="no new run: test the last run's survivors again with the current tests (recheck.txt)",
    )
    parser.add_argument(
        "--mutants",
        nargs="+",
        metavar="GLOB",
        help="with --recheck: only the survivors whose mutmut names match one of these globs",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="with --recheck: one pytest process for all survivors (much faster; tests must keep no state)",
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="no new run: summarise the last run again (after one was stopped part-way, say)",
    )
    args = parser.parse_args(argv)
    targets = load_targets()
    unknown = [m for m in args.modules if m not in targets]
    if unknown:
        parser.error(f"not configured in {TARGETS_FILE.name}: {unknown}; configured: {sorted(targets)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    failed = 0
    for module in args.modules:
        target = targets[module]
        workdir = args.workdir / module.strip("/").replace("/", "_")
        if args.summary:
            print(summarise(target, workdir, list(target.tests)), flush=True)
            continue
        if args.recheck:
            try:
                print(recheck(target, workdir, args.mutants, args.in_process), flush=True)
            except (FileNotFoundError, RuntimeError) as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
            continue
        try:
            tests = prepare(target, workdir)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"== {module}: mutating in {workdir}, tests {tests}", flush=True)
        run = _mutmut(workdir, "run", "--max-children", str(args.jobs))
        if run.returncode != 0:
            print(f"error: mutmut run failed for {module} (exit {run.returncode})", file=sys.stderr)
            failed += 1
            continue
        print(summarise(target, workdir, tests), flush=True)
        print(f"survivors' diffs: {workdir / 'survivors.txt'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
