"""The server's audit log (``artsentry serve --audit-log FILE``): one JSON line per analysis, per
register change and per refused register write, appended and synced to disk before the answer
goes out. What a decision was made on (the photo's SHA-256, never the photo), by which model
version, with what outcome, for whom (the client address): the record a police or customs user
is asked for when a decision is questioned. Nothing in it is secret; the token is never written."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from .. import chainlog


def decision_summary(result: dict) -> dict:
    """The part of an ``Analyzer.analyze`` result an audit record keeps: the photo's hash and size,
    each model's name, version, label and decision, the register's best match, quality warnings."""
    image = result["image"]
    out: dict = {"sha256": image["sha256"], "bytes": image["bytes"]}
    warnings = (image.get("quality") or {}).get("warnings")
    if warnings:
        out["quality_warnings"] = warnings
    for key in ("ivory", "culture"):
        c = result.get(key)
        if c:
            out[key] = {"model": c["model"]["name"], "version": c["model"]["version"], "label": c["label"]}
            if c.get("decision"):
                out[key].update(probability=c["probability"], threshold=c["threshold"], decision=c["decision"])
    reg = result.get("register")
    if reg is not None:
        best = reg["matches"][0] if reg["matches"] else None
        out["register"] = {"no_match": reg["no_match"], "threshold": reg["threshold"],
                           "best": best and {k: best[k] for k in ("object_id", "score", "matched")}}
    return out


RECORD_START = b'{"time": "'  # json.dumps of a record, whose first field is its time


class AuditLog:
    """Append-only JSON lines at ``path``, each linked to the one before (``chainlog``: ``artsentry verify
    FILE`` checks the chain and prints its head); thread-safe; each line flushed and fsynced. A line a
    crash or a full disk cut short is closed with a line break before the next record, which links to the
    last whole one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._head = self._resume()  # fails at start, not at the first request, when the file cannot be written

    def _resume(self) -> str:
        with open(self.path, "ab") as f:
            if f.tell():
                with open(self.path, "rb") as r:
                    if r.read(len(RECORD_START)) != RECORD_START:  # every record begins so, a cut first one too
                        raise ValueError(f"{self.path} is not an artsentry audit log (its first line is not one of "
                                         "its records): records appended to it would mix with what it holds; "
                                         "choose another --audit-log")
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write(b"\n")
                        f.flush()
                        os.fsync(f.fileno())
        return chainlog.head_of(self.path)

    def write(self, event: str, client: str | None, **fields) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event,
                  "client": client, **fields}
        with self._lock:
            if self._head is None:  # the last write failed: where does the log stand?
                self._head = self._resume()
            text, head = chainlog.chained_lines([record], self._head)
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                self._head = None
                raise
            self._head = head
