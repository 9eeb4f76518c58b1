"""What an Arrow IPC stream will cost, read from its message headers before any buffer is decoded.

A record batch's header (a flatbuffer, `Message.fbs` of the Arrow format) gives its row count and the
offset and length of every buffer in its body; with compression, each buffer starts with its
uncompressed length. So the rows and the decompressed bytes of a stream are known before pyarrow
inflates anything: a 25 KiB zstd body that would inflate to 763 MiB is refused at 25 KiB.
"""

from __future__ import annotations

import dataclasses
import struct

import pyarrow as pa

_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2  # MessageHeader union tags


class IpcLimitError(ValueError):
    """The stream's headers are malformed (`limit` None) or describe more than is allowed (`limit`:
    "rows" or "bytes")."""

    def __init__(self, msg: str, limit: str | None = None):
        super().__init__(msg)
        self.limit = limit


@dataclasses.dataclass(frozen=True)
class _Table:
    """A flatbuffer table: where it starts in `buf` and its vtable's field offsets."""

    buf: bytes
    pos: int
    fields: tuple[int, ...]

    @classmethod
    def at(cls, buf: bytes, pos: int) -> _Table:
        vt = pos - _i32(buf, pos)
        vt_size = _u16(buf, vt)
        return cls(buf, pos, tuple(_u16(buf, vt + 4 + 2 * i) for i in range(max(0, (vt_size - 4) // 2))))

    def _field(self, i: int) -> int | None:
        off = self.fields[i] if i < len(self.fields) else 0
        return self.pos + off if off else None

    def u8(self, i: int) -> int:
        at = self._field(i)
        return self.buf[at] if at is not None else 0

    def i64(self, i: int) -> int:
        at = self._field(i)
        return struct.unpack_from("<q", self.buf, at)[0] if at is not None else 0

    def table(self, i: int) -> _Table | None:
        at = self._field(i)
        return _Table.at(self.buf, at + _u32(self.buf, at)) if at is not None else None

    def structs(self, i: int, size: int) -> list[bytes]:
        """A vector of fixed-size structs."""
        at = self._field(i)
        if at is None:
            return []
        start = at + _u32(self.buf, at)
        n = _u32(self.buf, start)
        if start + 4 + n * size > len(self.buf):
            raise IpcLimitError("a message header points past its end")
        return [self.buf[start + 4 + k * size : start + 4 + (k + 1) * size] for k in range(n)]


def _u16(b: bytes, at: int) -> int:
    return int(struct.unpack_from("<H", b, at)[0])


def _u32(b: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", b, at)[0])


def _i32(b: bytes, at: int) -> int:
    return int(struct.unpack_from("<i", b, at)[0])


def batch_cost(message: pa.ipc.Message) -> tuple[int, int]:
    """(rows, decompressed body bytes) of a record or dictionary batch message; (0, 0) for others."""
    try:
        meta = message.metadata.to_pybytes()
        root = _Table.at(meta, _u32(meta, 0))
        kind, header = root.u8(1), root.table(2)
        if header is None or kind not in (_RECORD_BATCH, _DICTIONARY_BATCH):
            return 0, 0
        if kind == _DICTIONARY_BATCH:
            header = header.table(1)
            if header is None:
                return 0, 0
        rows = header.i64(0)
        buffers = [struct.unpack("<qq", s) for s in header.structs(2, 16)]
        compressed = header.table(3) is not None
    except (struct.error, IndexError) as exc:
        raise IpcLimitError(f"a message header cannot be read ({exc})") from None
    if not compressed:
        return rows, int(message.body.size if message.body is not None else 0)
    body = message.body.to_pybytes() if message.body is not None else b""
    total = 0
    for offset, length in buffers:
        if length == 0:
            continue
        if offset < 0 or length < 8 or offset + length > len(body):
            raise IpcLimitError("a compressed buffer lies outside its message body")
        raw = struct.unpack_from("<q", body, offset)[0]  # -1: stored uncompressed
        if raw < -1:
            raise IpcLimitError(f"a compressed buffer declares {raw} bytes uncompressed")
        total += length - 8 if raw == -1 else raw
    return rows, total


def read_limited(body: bytes, max_rows: int, max_bytes: int) -> pa.Table:
    """An IPC stream → table, refusing (IpcLimitError, before decoding it) a stream of more than
    `max_rows` rows or `max_bytes` decompressed bytes; every batch is validated in full, and nothing may
    follow the stream's end."""
    source = pa.BufferReader(pa.py_buffer(body))
    reader = pa.ipc.MessageReader.open_stream(source)
    try:
        schema_msg = reader.read_next_message()
    except StopIteration:  # pyarrow's signal for a stream that ends before its first message
        schema_msg = None
    if schema_msg is None or schema_msg.type != "schema":
        raise IpcLimitError("the stream does not start with a schema")
    schema = pa.ipc.read_schema(schema_msg)
    rows = size = 0
    batches = []
    for message in reader:
        if message.type in ("dictionary batch", "dictionary"):  # the name varies across pyarrow versions
            raise IpcLimitError("dictionary-encoded columns are not accepted; send plain strings")
        n, nbytes = batch_cost(message)
        rows, size = rows + n, size + nbytes
        if rows > max_rows:
            raise IpcLimitError(f"more than {max_rows} rows (series)", "rows")
        if size > max_bytes:
            raise IpcLimitError(f"more than {max_bytes} bytes once decompressed", "bytes")
        if message.type == "record batch":
            batch = pa.ipc.read_record_batch(message, schema)
            batch.validate(full=True)
            batches.append(batch)
    if source.tell() != len(body):
        raise IpcLimitError(f"{len(body) - source.tell()} bytes follow the end of the stream")
    return pa.Table.from_batches(batches, schema=schema)


def declared_bytes(body: bytes) -> int:
    """What an IPC stream's batches say they hold once decompressed, read from their headers alone (a
    stream that cannot be read this way: its own size; decoding will say what is wrong)."""
    total = 0
    try:
        for message in pa.ipc.MessageReader.open_stream(pa.py_buffer(body)):
            total += batch_cost(message)[1]
    except (pa.ArrowException, IpcLimitError, OSError, ValueError):
        return len(body)
    return max(total, len(body))
