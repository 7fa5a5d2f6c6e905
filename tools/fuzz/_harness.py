"""Shared start-up of the atheris harnesses in tools/fuzz (coverage-guided fuzzing, not run in CI).

Each harness is run from the repository root as `python tools/fuzz/fuzz_<target>.py [libFuzzer flags]
[CORPUS_DIR ...]`; without a corpus directory it fuzzes from the seeds it writes into a temporary one.
A crash (an exception other than the target's own error type, or a signal) stops the run and leaves
`crash-<sha1>` with the input in the current directory.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """atheris.Setup + Fuzz with the seeds as the corpus when no corpus directory is on the command line."""
    import atheris

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="ttt_fuzz_corpus_"))
        for i, seed in enumerate(seeds):
            (corpus / f"seed{i:03d}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
