"""Hash-chained JSON-lines logs: the screening evidence log (``screen``) and the server's audit log
(``serve --audit-log``).

Each record carries, under ``prev``, the SHA-256 of the line before it (its bytes without the line
break; ``GENESIS`` for the first record). The hash of the last line, the log's *head*, therefore
stands for every record up to it: note a head down (it is printed by ``artsentry verify``) and later
``verify --expect HEAD`` shows whether the records it stood for are still in the log, byte for byte,
even after more were appended (a resumed screening run, a server that kept serving). A record edited,
removed or inserted breaks the chain at the next record. The chain is not a signature: someone who can
rewrite the file can rewrite every link after an edit, which a head noted down elsewhere (in a case
file, an e-mail) then exposes.

Records written before the chain existed have no ``prev``: a log that begins with them is checked
from its first linked record on, and says how many came before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FIELD = "prev"
GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    """The link to a line: SHA-256 of its bytes without the line break."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def chained_lines(records, prev: str) -> tuple[str, str]:
    """``records`` as JSON lines, each linked to the one before (the first to ``prev``). Returns the
    text and the new head."""
    out = []
    for r in records:
        line = json.dumps({**r, FIELD: prev}, ensure_ascii=False, default=str)
        prev = hashlib.sha256(line.encode("utf-8")).hexdigest()
        out.append(line + "\n")
    return "".join(out), prev


def head_of(path: str | os.PathLike, chunk: int = 1 << 16) -> str:
    """The hash of the last complete, well-formed line of the log at ``path`` (``GENESIS`` when there is
    none). Reads from the end: a long log is not read whole."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return GENESIS
    with f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        pos = end
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            lines = tail.split(b"\n")
            complete = lines[1:-1] if pos > 0 else lines[:-1]  # the first may be cut; the last is unterminated
            for line in reversed(complete):
                if _parses(line):
                    return line_hash(line)
    return GENESIS


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def check(data: bytes, prev: str | None = None) -> dict:
    """Follow the chain through a log's bytes (an unterminated last line, a write cut short, is left
    out). ``prev``: the head of the file before it, for a log rotated into several files (its first record
    must link to that). Returns ``records`` (well-formed lines), ``unchained`` (records before the first
    linked one: written before the chain existed), ``bad_lines`` (1-based numbers of lines that are not JSON
    records), ``broken`` (1-based line numbers where a record does not link to the record before it),
    ``continues`` (without ``prev``, when the first record links to a record that is not in the data: the
    last of a rotated log's earlier file, or removed; else None), ``head`` (the hash of the last record) and
    ``hashes`` (each record's hash, in order)."""
    records = unchained = 0
    bad: list[int] = []
    broken: list[int] = []
    hashes: list[str] = []
    continues = None
    expected = prev  # the link the next record must carry, once the chain has begun (or from the file before)
    lines = data.split(b"\n")[:-1]
    for number, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            bad.append(number)
            continue
        records += 1
        link = rec.get(FIELD)
        if expected is None and link is None:
            unchained += 1
        elif expected is None and not hashes and link != GENESIS:
            continues = link
        elif link != (expected if expected is not None else (hashes[-1] if hashes else GENESIS)):
            broken.append(number)
        h = line_hash(line)
        hashes.append(h)
        if link is not None or expected is not None:
            expected = h
    return {"records": records, "unchained": unchained, "bad_lines": bad, "broken": broken, "continues": continues,
            "head": hashes[-1] if hashes else prev or GENESIS, "hashes": hashes}


def check_file(path: str | os.PathLike) -> dict:
    """``check`` of the log at ``path``."""
    return check(Path(path).read_bytes())


def report(data: bytes, expect: str | None = None) -> dict:
    """``check`` of a log's bytes without its per-record hashes; with ``expect`` (a head noted down
    earlier), ``expected``: how many records it stood for, still there unchanged (None: none)."""
    result = check(data)
    if expect is not None:
        result["expected"] = find_head(result, expect)
    del result["hashes"]
    return result


def find_head(result: dict, head: str) -> int | None:
    """How many records a head noted down earlier stands for in a ``check`` result, provided the chain is
    whole up to it (no record before it, nor it, fails to link); None when it is not the hash of such a
    record. A line that is not a record (a write cut short, then closed) does not count against it: the
    records still link across it, and ``check`` lists it under ``bad_lines``."""
    head = head.strip().lower()
    try:
        n = result["hashes"].index(head) + 1
    except ValueError:
        return None
    return None if result["broken"] and min(result["broken"]) <= _line_of(result, n) else n


def _line_of(result: dict, n: int) -> int:
    """The 1-based line number of the ``n``-th record (bad lines count as lines)."""
    line = n
    for b in sorted(result["bad_lines"]):
        if b <= line:
            line += 1
    return line
