"""Aqua wire parsing: job answers, and export files read incrementally in bounded memory.

Pure functions and small incremental parsers (bytes in, rows out); no I/O here, so each
is tested on recorded bodies. The connector (``aqua.py``) feeds them the download.

* CSV: text is cut at the last line end outside quotes (quote parity), so a record whose
  quoted field holds a line break is never split; only whole records reach ``csv``. The
  tail after the last such line end waits for more bytes; at the end of a complete body
  it is the last record (the file need not end with a line break).
* JSON: an array of row objects (or a header array, then value arrays), each element
  decoded with ``raw_decode`` as soon as it is whole; an element that still does not
  decode with ``MAX_ELEMENT_CHARS`` after it, or at the end of the body, is malformed.
* Excel: read from a spooled file by openpyxl's read-only mode (see ``aqua.py``).

Every row has exactly the header's columns, or the file is malformed (``ParseError``):
a short row is how a truncated file shows, and it must never be staged.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from service.errors import ParseError
from service.models import JSON, canonical_json

VENDOR = "aqua"
MAX_ELEMENT_CHARS = 4 * 1024 * 1024  # one JSON row this long without decoding is malformed
KEY_SEPARATOR = "|"

QUEUED, INPROGRESS, COMPLETED, FAILED = "queued", "inprogress", "completed", "failed"
RUNNING = {QUEUED, INPROGRESS, "running", "in progress"}


# --- job answers ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a create, rerun or status answer says about a job."""

    job_id: str
    status: str  # lower-cased: queued | inprogress | completed | failed | …
    publish_link: str | None = None
    text: str | None = None  # jobStatusText
    can_rerun: bool | None = None


def _get(obj: dict[str, Any], name: str) -> Any:
    """A field by name, case-insensitively (``jobID`` in status answers, ``jobId`` elsewhere)."""
    if name in obj:
        return obj[name]
    wanted = name.casefold()
    return next((v for k, v in obj.items() if str(k).casefold() == wanted), None)


def response_links(raw: Any) -> list[str]:
    """The ``DownloadLink``s of a job's ``response`` field: JSON inside a string."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    links = (_get(item, "DownloadLink") for item in raw if isinstance(item, dict))
    return [link for link in links if isinstance(link, str) and link]


def parse_job(obj: Any, *, what: str) -> JobInfo:
    """One job object (create/rerun answer, or one element of a status answer)."""
    if not isinstance(obj, dict):
        raise ParseError(f"{what}: expected a job object", vendor=VENDOR)
    job_id = _get(obj, "jobId")
    status = _get(obj, "jobStatus")
    if not isinstance(job_id, str) or not job_id or not isinstance(status, str):
        raise ParseError(f"{what}: no jobId/jobStatus in the answer", vendor=VENDOR)
    link = _get(obj, "publishLink")
    if not isinstance(link, str) or not link:
        found = response_links(_get(obj, "response"))
        link = found[0] if found else None
    can = _get(obj, "canReRun")
    text = _get(obj, "jobStatusText")
    return JobInfo(
        job_id,
        status.strip().casefold(),
        link,
        text if isinstance(text, str) else None,
        None if can is None else str(can).strip().casefold() in ("yes", "true"),
    )


def parse_status(body: Any, job_id: str) -> JobInfo | None:
    """A status answer (OData ``value[]`` or a single object) → the job, or None when the
    vendor no longer knows it (an empty ``value``: unknown or purged)."""
    if isinstance(body, dict) and isinstance(body.get("value"), list):
        for item in body["value"]:
            if isinstance(item, dict) and str(_get(item, "jobId")) == job_id:
                return parse_job(item, what="job status")
        return None
    return parse_job(body, what="job status")


# --- rows and keys -------------------------------------------------------------------------
def row_key(row: JSON, key_columns: tuple[str, ...]) -> str:
    """The record key: the key columns' values joined by ``|``, else a hash of the row.

    A hashed key changes whenever any value of the row changes: an edited row is then a
    new record and its old version is soft-deleted by the next complete snapshot.
    """
    if not key_columns:
        return hashlib.sha256(canonical_json(row).encode()).hexdigest()[:32]
    values = []
    for column in key_columns:
        value = row.get(column)
        if value is None or value == "":
            raise ParseError(f"a row has no value in key column {column!r}", vendor=VENDOR)
        values.append(str(value))
    return KEY_SEPARATOR.join(values)


def check_columns(header: list[str], key_columns: tuple[str, ...]) -> None:
    if len(set(header)) != len(header):
        raise ParseError("the export repeats a column name", vendor=VENDOR)
    missing = [c for c in key_columns if c not in header]
    if missing:
        raise ParseError(
            f"key column(s) {missing} not in the export (columns: {', '.join(header)})",
            vendor=VENDOR,
        )


# --- CSV -----------------------------------------------------------------------------------
def _complete_cut(text: str, quotes_before: int) -> int:
    """The end of the last whole CSV record in ``text`` (0: none yet): the last line
    break at which the count of quote characters so far is even."""
    end = len(text)
    while True:
        cut = text.rfind("\n", 0, end)
        if cut < 0:
            return 0
        if (quotes_before + text.count('"', 0, cut)) % 2 == 0:
            return cut + 1
        end = cut


class CsvRows:
    """Bytes in (``feed``), row dicts out; ``close`` at the end of a complete body."""

    def __init__(self, key_columns: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self._tail = ""
        self._header: list[str] | None = None
        self._keys = key_columns
        self.rows = 0

    def feed(self, data: bytes) -> list[JSON]:
        try:
            text = self._tail + self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise ParseError(f"CSV export is not UTF-8: {exc.reason}", vendor=VENDOR) from exc
        cut = _complete_cut(text, 0)
        self._tail = text[cut:]
        return self._parse(text[:cut]) if cut else []

    def close(self) -> list[JSON]:
        try:
            text = self._tail + self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ParseError(f"CSV export is not UTF-8: {exc.reason}", vendor=VENDOR) from exc
        self._tail = ""
        if text.count('"') % 2:
            raise ParseError("CSV export ends inside a quoted field", vendor=VENDOR)
        rows = self._parse(text) if text.strip() else []
        if self._header is None:
            raise ParseError("CSV export has no header row", vendor=VENDOR)
        return rows

    def _parse(self, text: str) -> list[JSON]:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            if self._header is None:
                header = next(reader, None)
                if header is None:
                    return []
                check_columns(header, self._keys)
                self._header = header
            header = self._header
            width = len(header)
            out: list[JSON] = []
            for values in reader:
                if len(values) != width:
                    if not values:
                        continue  # a blank line
                    raise ParseError(
                        f"CSV row {self.rows + len(out) + 1} has {len(values)} fields, "
                        f"the header {width} (truncated or malformed export)",
                        vendor=VENDOR,
                    )
                out.append(dict(zip(header, values, strict=True)))
        except csv.Error as exc:
            raise ParseError(f"malformed CSV export: {exc}", vendor=VENDOR) from exc
        self.rows += len(out)
        return out


# --- JSON ----------------------------------------------------------------------------------
_WS = " \t\r\n"


class JsonRows:
    """An export's JSON array, element by element: objects keyed by column, or a header
    array then value arrays. ``feed`` bytes, ``close`` at the end of a complete body."""

    def __init__(self, key_columns: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._state = "start"  # start → first (after '[') → next (after an element) → done
        self._header: list[str] | None = None
        self._arrays: bool | None = None
        self._keys = key_columns
        self.rows = 0

    def feed(self, data: bytes) -> list[JSON]:
        try:
            self._buf = self._buf[self._pos :] + self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON export is not UTF-8: {exc.reason}", vendor=VENDOR) from exc
        self._pos = 0
        return self._drain(final=False)

    def close(self) -> list[JSON]:
        try:  # a multi-byte sequence cut short by the end of the file
            self._buf = self._buf[self._pos :] + self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON export is not UTF-8: {exc.reason}", vendor=VENDOR) from exc
        self._pos = 0
        rows = self._drain(final=True)
        if self._state != "done" or self._buf[self._pos :].strip(_WS):
            raise ParseError("JSON export is truncated or has trailing data", vendor=VENDOR)
        return rows

    def _skip_ws(self) -> None:
        buf, pos = self._buf, self._pos
        while pos < len(buf) and buf[pos] in _WS:
            pos += 1
        self._pos = pos

    def _malformed(self, why: str) -> ParseError:
        return ParseError(f"malformed JSON export after {self.rows} rows: {why}", vendor=VENDOR)

    def _drain(self, *, final: bool) -> list[JSON]:
        out: list[JSON] = []
        while True:
            self._skip_ws()
            if self._pos >= len(self._buf):
                break
            char = self._buf[self._pos]
            if self._state == "start":
                if char != "[":
                    raise self._malformed("the export is not a JSON array")
                self._pos += 1
                self._state = "first"
                continue
            if self._state == "done":
                break
            if self._state == "next":
                if char == ",":
                    self._pos += 1
                    self._state = "element"
                    continue
                if char == "]":
                    self._pos += 1
                    self._state = "done"
                    continue
                raise self._malformed(f"expected ',' or ']', found {char!r}")
            if self._state == "first" and char == "]":
                self._pos += 1
                self._state = "done"
                continue
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if final or len(self._buf) - self._pos > MAX_ELEMENT_CHARS:
                    raise self._malformed(exc.msg) from exc
                break  # wait for more bytes
            except RecursionError as exc:  # nested deeper than any export row is
                raise self._malformed("a row nests too deeply") from exc
            if end >= len(self._buf) and not final and not isinstance(value, dict | list):
                break  # a number may go on in the next chunk
            self._pos = end
            self._state = "next"
            row = self._row(value)
            if row is not None:
                out.append(row)
        self.rows += len(out)
        return out

    def _row(self, value: Any) -> JSON | None:
        if self._arrays is None:
            self._arrays = isinstance(value, list)
            if self._arrays:
                if not all(isinstance(c, str) for c in value):
                    raise self._malformed("the header array holds non-strings")
                self._header = list(value)
                check_columns(self._header, self._keys)
                return None
        if self._arrays:
            assert self._header is not None
            if not isinstance(value, list) or len(value) != len(self._header):
                raise self._malformed("a row array does not match the header")
            return dict(zip(self._header, value, strict=True))
        if not isinstance(value, dict):
            raise self._malformed("a row is not an object")
        if self._header is None:
            self._header = list(value)
            check_columns(self._header, self._keys)
        return value


# --- Excel ---------------------------------------------------------------------------------
def cell_value(value: Any) -> Any:
    """An Excel cell as JSON: dates as ISO text; whole floats stay floats (as typed)."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


def excel_rows(values: Iterable[tuple[Any, ...]], key_columns: tuple[str, ...]) -> Iterator[JSON]:
    """Rows of a worksheet (first row: the header) → row dicts; empty rows are skipped."""
    it = iter(values)
    first = next(it, None)
    if first is None:
        raise ParseError("Excel export has no header row", vendor=VENDOR)
    header = [str(c) if c is not None else "" for c in first]
    while header and header[-1] == "":
        header.pop()
    check_columns(header, key_columns)
    width = len(header)
    for values_ in it:
        cells = list(values_[:width]) + [None] * (width - len(values_))
        if all(c is None for c in cells):
            continue
        yield {h: cell_value(c) for h, c in zip(header, cells, strict=True)}
