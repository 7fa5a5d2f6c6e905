"""Hypothesis strategies that build arbitrary protobuf messages from their descriptors.

`messages(descriptor)` walks the descriptor generically: every scalar type (with its extreme values), enums
with undeclared numbers, nested messages (to a depth), repeated fields, proto3 optional presence,
NaN/inf floats, odd strings and bytes. Nothing here knows our API; `strings` may be given a pool of
values worth trying (real ids), mixed with arbitrary text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

FD = FieldDescriptor
INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}
ODD_TEXT = (
    "",
    " ",
    "\x00",
    "../../etc/passwd",
    "/dev/zero",
    "1" * 30,
    "9223372036854775808",
    "-1",
    "é" * 64,
    "\u202e\ufeff",
    "[" * 200,
    '{"OTIO_SCHEMA": "Timeline.1"}',
    "x" * 5000,
    "[" * 100_000 + "]" * 100_000,  # what crashed the server's OTIO parse
    '{"OTIO_SCHEMA": "Timeline.1", "metadata": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001,
)


def integers(field_type: int) -> st.SearchStrategy[int]:
    """The type's whole range, its edges (and SQLite's 2**63) and small values, which most fields take."""
    low, high = INT_RANGES[field_type]
    edges = (low, -1, 0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**63, high)
    return st.one_of(
        st.sampled_from(sorted({v for v in edges if low <= v <= high})),
        st.integers(max(low, -16), 4096),
        st.integers(low, high),
    )


def floats(field_type: int) -> st.SearchStrategy[float]:
    width = 32 if field_type == FD.TYPE_FLOAT else 64
    edges = [float("nan"), float("inf"), -float("inf"), -0.0, 0.5, 1.0, 1e30 if width == 64 else 3e38]
    return st.one_of(st.sampled_from(edges), st.floats(width=width), st.floats(0, 2, width=width))


def strings(pool: Sequence[str] = ()) -> st.SearchStrategy[str]:
    choices = [st.text(max_size=40), st.sampled_from(ODD_TEXT)]
    if pool:  # as likely as the other two together: ids must often be real to get past the lookup
        choices += [st.sampled_from(list(pool))] * 2
    return st.one_of(*choices)


def scalar(field: FieldDescriptor, pool: Sequence[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t in INT_RANGES:
        return integers(t)
    if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return floats(t)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t == FD.TYPE_STRING:
        return strings(pool)
    if t == FD.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x76\x2f\x31\x01", bytes(4096)]))
    if t == FD.TYPE_ENUM:
        declared = sorted(field.enum_type.values_by_number)
        return st.one_of(st.sampled_from(declared), st.integers(-(2**31), 2**31 - 1))
    raise TypeError(f"no strategy for field {field.full_name} of type {t}")


def _repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FD.LABEL_REPEATED


def messages(
    descriptor: Descriptor, pool: Sequence[str] = (), max_depth: int = 3, max_repeat: int = 4
) -> st.SearchStrategy[Any]:
    """Arbitrary instances of the message type `descriptor` (each field present or not)."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: Any) -> Any:
        message = cls()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            if field.type == FD.TYPE_MESSAGE:
                if max_depth <= 0:
                    continue
                child = messages(field.message_type, pool, max_depth - 1, max_repeat)
                if _repeated(field):
                    getattr(message, field.name).extend(draw(st.lists(child, max_size=max_repeat)))
                else:
                    getattr(message, field.name).CopyFrom(draw(child))
            elif _repeated(field):
                getattr(message, field.name).extend(draw(st.lists(scalar(field, pool), max_size=max_repeat)))
            else:
                setattr(message, field.name, draw(scalar(field, pool)))
        return message

    return build()
