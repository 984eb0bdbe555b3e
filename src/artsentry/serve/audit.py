"""The server's audit log (``artsentry serve --audit-log FILE``): one JSON line per analysis, per
register change and per refused register write, appended and synced to disk before the answer
goes out. What a decision was made on (the photo's SHA-256, never the photo), by which model
version, with what outcome, for whom (the client address): the record a police or customs user
is asked for when a decision is questioned. Nothing in it is secret; the token is never written."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path


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


class AuditLog:
    """Append-only JSON lines at ``path``; thread-safe; each line flushed and fsynced."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8"):
            pass  # fail at start, not at the first request, when the file cannot be written
        self._lock = threading.Lock()

    def write(self, event: str, client: str | None, **fields) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event,
                  "client": client, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
