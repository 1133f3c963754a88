"""Export file bodies (CSV, JSON, Excel), generated and sent in chunks, never whole.

The encoders are plain generators of byte chunks; :func:`send_chunks` writes them to a
``web.StreamResponse`` and can cut the body short (the truncated-download fault).
Excel is the exception to pure streaming: openpyxl must finish the zip before it can be
sent, so the workbook is written in write-only mode to a temporary file (not memory) in a
worker thread, then that file is streamed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import IO, Any

from aiohttp import web
from openpyxl import Workbook

from sandbox.data import Dataset, Record

FILE_CHUNK_BYTES = 64 * 1024


def csv_chunks(
    rows: Iterable[Record], columns: tuple[str, ...], chunk_rows: int
) -> Iterator[bytes]:
    """A header row, then the rows: UTF-8, comma-separated, CRLF line ends (RFC 4180)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    values = itemgetter(*columns)  # every row carries every column (Source.columns)
    for n, rec in enumerate(rows, 1):
        writer.writerow(values(rec))
        if n % chunk_rows == 0:
            yield buf.getvalue().encode("utf-8")
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode("utf-8")


def json_chunks(
    rows: Iterable[Record], columns: tuple[str, ...], chunk_rows: int, shape: str
) -> Iterator[bytes]:
    """A JSON array: objects keyed by column caption, or (``shape="arrays"``) a header
    array followed by one value array per row."""
    parts: list[str] = ["["]
    first = True
    if shape == "arrays":
        parts.append(json.dumps(list(columns), ensure_ascii=False))
        first = False
    values = itemgetter(*columns)
    for rec in rows:
        item = list(values(rec)) if shape == "arrays" else {c: rec[c] for c in columns}
        parts.append(("" if first else ",") + json.dumps(item, ensure_ascii=False))
        first = False
        if len(parts) >= chunk_rows:
            yield "".join(parts).encode("utf-8")
            parts.clear()
    parts.append("]")
    yield "".join(parts).encode("utf-8")


def malformed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A JSON body with text that is not JSON between two rows, half-way through the
    first chunk (the ``malformed_json`` fault): well-formed up to there, broken after."""
    first = next(chunks, b"")
    half = len(first) // 2
    cut = max(first.find(b"},{", half), first.find(b"],[", half))
    at = cut + 2 if cut >= 0 else max(0, len(first) - 1)
    yield first[:at] + b"<!-- not json -->" + first[at:]
    yield from chunks


def write_xlsx(rows: Iterable[Record], columns: tuple[str, ...], title: str) -> IO[bytes]:
    """An .xlsx in a temporary file (rewound), built with openpyxl's write-only mode.

    Blocking: call it in a worker thread. Memory stays flat; time grows with rows, which is
    why the simulator caps Excel exports (``excel_max_rows``).
    """
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=title[:31] or "Export")
    ws.append(list(columns))
    for rec in rows:
        ws.append([rec.get(c) for c in columns])
    out = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it after sending
    wb.save(out)
    out.seek(0)
    return out


def file_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(FILE_CHUNK_BYTES):
        yield chunk


async def send_chunks(
    request: web.Request,
    resp: web.StreamResponse,
    chunks: Iterator[bytes],
    *,
    cut_at_bytes: int | None = None,
) -> web.StreamResponse:
    """Write ``chunks`` to ``resp`` (already prepared), yielding to the loop between chunks.

    With ``cut_at_bytes``, stop after that many bytes and close the connection without the
    final chunk, so the client sees a body cut short. If the body turns out to be shorter
    than ``cut_at_bytes``, the last chunk is cut in half instead: a truncation always happens.
    """
    sent = 0
    pending = next(chunks, None)
    while pending is not None:
        following = next(chunks, None)
        chunk = pending
        if cut_at_bytes is not None:
            if sent + len(chunk) > cut_at_bytes:
                chunk = chunk[: max(0, cut_at_bytes - sent)]
            elif following is None:
                chunk = chunk[: len(chunk) // 2]
            if len(chunk) < len(pending):
                await resp.write(chunk)
                return _drop_connection(request, resp)
        await resp.write(chunk)
        sent += len(chunk)
        pending = following
        await asyncio.sleep(0)  # a long export must not starve other requests
    await resp.write_eof()
    return resp


def _drop_connection(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    # close(), not abort(): what was written still reaches the client, then the connection
    # ends without the terminating chunk.
    if request.transport is not None:
        request.transport.close()
    return resp


def first_row_bytes(data: Dataset, columns: tuple[str, ...]) -> int:
    """Bytes of the first live row as CSV: for size estimates without generating the file."""
    first = next(data.indices(), None)
    rec = data.get(first) if first is not None else None
    if rec is None:
        return 0
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([rec.get(c, "") for c in columns])
    return len(buf.getvalue().encode("utf-8"))


def content_headers(output_format: str, filename: str) -> dict[str, Any]:
    types = {
        "CSV": "text/csv; charset=utf-8",
        "JSON": "application/json; charset=utf-8",
        "Excel": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
    headers: dict[str, Any] = {"Content-Type": types[output_format]}
    if output_format != "JSON":
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return headers
