"""Binary values behind a JSON header, in one bytes string: the model process's frames
(streamapp.serving.process) and the fan-out hop's messages (streamapp.pipeline.fanout).

    [header length: 4 bytes, big-endian][header: JSON, with "lengths"][the values, back to back]

A value goes as it is, neither escaped nor base64: a record's bytes need not be UTF-8, and a
comment's JSON is not parsed and written again on its way. A length of -1 is no value (None).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import orjson

_HEADER_LENGTH = struct.Struct("!I")
_NO_VALUE = -1

Values = Sequence[bytes | None]


def pack(header: dict[str, Any], values: Values = (), prefix: bytes = b"") -> bytes:
    """`prefix` (a format mark), the header and the values. default=str: a status header
    carries paths and times."""
    head = orjson.dumps({**header, "lengths": [_NO_VALUE if v is None else len(v)
                                               for v in values]}, default=str)
    return b"".join((prefix, _HEADER_LENGTH.pack(len(head)), head, *[v for v in values if v]))


def header_of(data: bytes, start: int = 0) -> tuple[dict[str, Any], int]:
    """The header (with "lengths") of what `pack` wrote from `start` on, and where its values
    begin; ValueError for anything else."""
    try:
        (length,) = _HEADER_LENGTH.unpack_from(data, start)
        at = start + _HEADER_LENGTH.size + length
        header = orjson.loads(data[start + _HEADER_LENGTH.size:at])
        if not isinstance(header.get("lengths"), list):
            raise TypeError("no value lengths")
    except (struct.error, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a framed message: {exc!r}") from None
    return header, at


def unpack(data: bytes, start: int = 0) -> tuple[dict[str, Any], list[bytes | None]]:
    """The header and values of what `pack` wrote from `start` on (past a prefix); ValueError
    for anything else."""
    header, at = header_of(data, start)
    lengths = header.pop("lengths")
    values: list[bytes | None] = []
    for n in lengths:
        if n == _NO_VALUE:
            values.append(None)
            continue
        if type(n) is not int or n < 0 or at + n > len(data):
            raise ValueError(f"a value length {n!r} beyond the message")
        values.append(data[at:at + n])
        at += n
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes after the last value")
    return header, values
