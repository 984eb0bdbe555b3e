"""Import the museum's bulk open-access CSV (``MetObjects.csv``) as a metadata source.

Rows become records with the API's field names, stored in a crawl's database
with status ``imported``; a following API crawl of the same ids fetches the
images (the CSV has no image URLs). Importing the same file twice changes
nothing; an object already fetched from the API keeps its API record.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ArtsentryError
from .crawl import CrawlStore

#: MetObjects.csv column -> API field
COLUMNS = {
    "Object ID": "objectID", "Object Number": "accessionNumber", "Is Highlight": "isHighlight",
    "Is Public Domain": "isPublicDomain", "Department": "department", "Object Name": "objectName",
    "Title": "title", "Culture": "culture", "Period": "period", "Dynasty": "dynasty",
    "Object Date": "objectDate", "Object Begin Date": "objectBeginDate", "Object End Date": "objectEndDate",
    "Medium": "medium", "Dimensions": "dimensions", "Classification": "classification", "Country": "country",
    "Region": "region", "Link Resource": "objectURL", "Tags": "tags", "Metadata Date": "metadataDate",
}
_BOOLS = {"isHighlight", "isPublicDomain"}
_INTS = {"objectID", "objectBeginDate", "objectEndDate"}


class MetObjectsError(ArtsentryError, ValueError):
    pass


#: a line put after the file's last: read as a row of its own, the file's quotes are all closed; read as the
#: end of a field, a quote was left open and the csv module took the rest of the file as that one field
_END = "\ufffeartsentry-end-of-file"


def read_metobjects(path: str | Path) -> Iterator[dict]:
    """Yield API-shaped records from a MetObjects.csv file (UTF-8, with or without BOM). A file that is not
    UTF-8, or not CSV (a quote never closed, too), is a ``MetObjectsError`` naming it (and the row, for CSV)."""
    path = Path(path)
    line = 1  # the first line of the row being read
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(itertools.chain(fh, [_END + "\n"]))
            if not reader.fieldnames or "Object ID" not in reader.fieldnames:
                raise MetObjectsError(f"{path}: not a MetObjects.csv file (no 'Object ID' column)")
            line = reader.line_num + 1
            for row in reader:
                if _END in _last_field(row, reader.fieldnames):
                    if row[reader.fieldnames[0]] == _END:
                        return
                    raise MetObjectsError(f"{path}:{line}: a quote opened in the row starting here is never closed, "
                                          "so the rest of the file would read as one field")
                yield _record(row, path, line)
                line = reader.line_num + 1  # a quoted field may span several lines
    except UnicodeDecodeError:
        raise MetObjectsError(f"{path}: not UTF-8 text, as the museum's file is (re-save it as UTF-8)") from None
    except csv.Error as exc:
        raise MetObjectsError(f"{path}:{line}: not readable as CSV ({exc})") from None


def _last_field(row: dict, fieldnames: list[str]) -> str:
    """The row's last field as read (the end-of-file line, if anywhere, is at the end of what was read)."""
    extra = row.get(None)  # DictReader's list of the fields beyond the header's
    if extra:
        return extra[-1]
    return next((row[f] for f in reversed(fieldnames) if row[f] is not None), "")


def _record(row: dict, path: Path, line: int) -> dict:
    """One MetObjects.csv row (the one starting on ``line``) as an API-shaped record."""
    raw_id = (row.get("Object ID") or "").strip()
    if not (raw_id.isascii() and raw_id.isdigit()):
        said = f"Object ID {raw_id!r} is not a number" if raw_id else "no Object ID"
        raise MetObjectsError(f"{path}:{line}: {said}")
    rec: dict = {}
    for col, field in COLUMNS.items():
        value = (row.get(col) or "").strip()
        if field in _BOOLS:
            rec[field] = value.lower() == "true"
        elif field in _INTS:
            try:
                rec[field] = int(value) if value else None
            except ValueError:
                rec[field] = None
        else:
            rec[field] = value
    return rec


def import_metobjects(path: str | Path, store: CrawlStore, *, keep: Callable[[dict], bool] | None = None,
                      public_domain_only: bool = True) -> list[int]:
    """Store the records that ``keep`` accepts; returns their ids (sorted). The rows stream from the file to
    the database in one transaction: a file that turns out unreadable part-way stores nothing."""
    ids = []

    def rows():
        for rec in read_metobjects(path):
            if public_domain_only and not rec["isPublicDomain"]:
                continue
            if keep is not None and not keep(rec):
                continue
            ids.append(rec["objectID"])
            yield rec["objectID"], json.dumps(rec, sort_keys=True)

    with store.db:
        store.db.execute("BEGIN")
        store.db.executemany("INSERT OR IGNORE INTO objects (object_id, status, source, record) "
                             "VALUES (?, 'imported', 'metobjects', ?)", rows())
    return sorted(set(ids))
