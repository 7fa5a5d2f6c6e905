"""atheris: the OTIO context check of the server (server.limits.check_otio_context: pre-scan, then json,
then OTIO). Anything but InvalidArgumentError (or a signal) is a finding.

    nice -n 19 python tools/fuzz/fuzz_otio_prescan.py -max_total_time=300
"""

from __future__ import annotations

import atheris
from _harness import run

with atheris.instrument_imports(include=["server.limits"]):
    from server.errors import InvalidArgumentError
    from server.limits import InputLimits, check_otio_context

# small limits so that the fuzzer reaches every refusal within short inputs
LIMITS = InputLimits(max_otio_bytes=4096, max_otio_depth=16, max_otio_elements=256, max_otio_token_bytes=32)
SEEDS = [
    b'{"OTIO_SCHEMA": "Timeline.1", "name": "t", "tracks": {"OTIO_SCHEMA": "Stack.1", "children": []}}',
    b'{"OTIO_SCHEMA": "Clip.2", "name": "c", "metadata": {"a": [1, 2.5e3, Infinity, NaN, null, true]}}',
    b'{"OTIO_SCHEMA": "Gap.1", "source_range": {"OTIO_SCHEMA": "TimeRange.1"}}',
    b"[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
    b'{"a": "\\u00e9\\"", "OTIO_SCHEMA": 7}',
]


def test_one_input(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(len(data))
    try:
        check_otio_context(text, LIMITS)
    except InvalidArgumentError:
        pass


if __name__ == "__main__":
    run(test_one_input, SEEDS)
