"""Manifests: the table of images every artsentry step reads.

A manifest is a ``pandas.DataFrame`` with one row per image and the columns

- ``path``: absolute path of the image file,
- ``label``: its class, as a string,
- ``object_id``: the object it shows (several photos may show one object;
  splits never put one object on both sides),

plus any metadata columns the source had (department, culture, ...), which are
carried through untouched. An optional ``split`` column (train / val / test)
fixes the split instead of drawing one.

``read_manifest`` accepts:

- a CSV or Parquet file; paths in it are relative to the file's folder;
  the path column may be called ``path``, ``file``, ``image``, ``filepath`` or
  ``filename``, the object column ``object_id``, ``objectID`` or ``source_id``;
- a folder holding ``manifest.csv`` / ``metadata.csv`` (read as above);
- a labelled folder ``<root>/<label>/...`` or ``<root>/images/<label>/...``
  (every image file below a label folder, recursively).

Rows whose file does not exist are dropped and reported, never silently.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import ArtsentryError
from ..files import LOCK_NAME, atomic_path, first_names
from .images import WINDOWS_PATH_ADVICE, find_images, is_image_file, windows_path

log = logging.getLogger(__name__)

PATH_COLUMNS = ("path", "file", "image", "filepath", "filename", "image_path")
OBJECT_COLUMNS = ("object_id", "objectID", "objectid", "source_id")
#: JSON lines tables: one record a line
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
#: file endings read as tables (``_read_table``): listings, manifests, catalogues
TABLE_SUFFIXES = (".csv", ".tsv", ".json", *JSON_LINES_SUFFIXES, ".parquet", ".xlsx")  # .tsv: a CSV of tabs
#: separators a .csv is also read with when its header, read comma-separated, is one column holding
#: one of them (spreadsheets in many locales export "image;label;object_id")
CSV_SEPARATORS = (";", "\t", "|")
MANIFEST_NAMES = ("manifest.csv", "manifest.parquet", "metadata.csv")
SPLITS = ("train", "val", "test")


class ManifestError(ArtsentryError, ValueError):
    """A manifest or dataset folder cannot be used; the message says why."""


@dataclass
class ManifestReport:
    """What ``read_manifest`` dropped or inferred, to show the user."""

    source: str
    missing_files: list[str] = field(default_factory=list)
    object_id_inferred: bool = False
    object_ids_blank: int = 0  # rows of an object id column left empty: each its own object
    case_clashes: list[str] = field(default_factory=list)  # labels differing only in case, in words
    paths_hint: str = ""  # why the table's image paths cannot be read as written (``paths_hint``)

    def lines(self) -> list[str]:
        out = []
        if self.case_clashes:
            out.append(f"labels that differ only in case are different classes: {'; '.join(self.case_clashes)} "
                       "(if each pair is one class, write it one way)")
        urls = [m for m in self.missing_files if "://" in m]  # as `register import` says of them
        gone = [m for m in self.missing_files if "://" not in m]
        if gone:
            out.append(f"{len(gone)} listed image(s) not found and skipped: {first_names(gone, 5)}")
        if urls:
            out.append(f"{len(urls)} listed image(s) are URLs, skipped: images are read from files; download them "
                       f"first: {first_names(urls, 5)}")
        if self.paths_hint:
            out.append(self.paths_hint)
        if self.object_id_inferred:
            out.append("no object id column: each image is treated as its own object")
        if self.object_ids_blank:
            out.append(f"{self.object_ids_blank} row(s) with an empty object id: each of those images is treated "
                       "as its own object (not as one object together)")
        return out


def column_key(name) -> str:
    """A column's name as candidates are matched against it: any case, spaces and hyphens as underscores, a
    capital after a small letter as a new word ("Object ID", "object-id", "objectID" and "object_id" alike: the
    names a spreadsheet's author types, and an API's camelCase: "itemId", "imageUrl")."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name).strip())
    return re.sub(r"[\s\-]+", "_", name.lower())


def _pick(columns, candidates, what: str, source: str, required: bool = True):
    keys: dict[str, str] = {}
    for c in columns:
        keys.setdefault(column_key(c), c)  # two columns of one key: the first, as a table is read left to right
    for cand in candidates:
        if column_key(cand) in keys:
            return keys[column_key(cand)]
    if required:
        raise ManifestError(
            f"{source}: no {what} column; expected one of {', '.join(candidates)} (found: {', '.join(map(str, columns))})"
        )
    return None


_NUMBERED = re.compile(r"(.+?)[ _-]?(\d+)")


#: columns holding a row's other photos beside its photo column (eBay's API: ``image``, then ``additionalImages``)
ADDITIONAL_PHOTO_COLUMNS = ("additional_images",)


def photo_columns(columns, candidates, what: str, source: str, more: Sequence[str] = ()) -> list[str]:
    """A table's photo column and the columns numbering it, for a table with several photos per row (an
    Etsy export's IMAGE1 ... IMAGE10, a catalogue's image, image2, image_3): the first of ``candidates``
    found (any case) with its numbered columns, the bare one first, then by number; or the numbered columns
    of the first candidate that has some (image_1, image_2); then those of ``more`` the table has (a row's
    other photos: ``ADDITIONAL_PHOTO_COLUMNS``). ``ManifestError`` when none is found."""
    def number(column) -> int:
        return int(_NUMBERED.fullmatch(column_key(column)).group(2))

    for cand in candidates:
        cand = column_key(cand)
        bare = [c for c in columns if column_key(c) == cand]
        numbered = [c for c in columns if (m := _NUMBERED.fullmatch(column_key(c))) and m.group(1) == cand]
        if bare or numbered:
            chosen = bare[:1] + sorted(numbered, key=number)
            extra = (next((c for c in columns if column_key(c) == column_key(m)), None) for m in more)
            return chosen + [c for c in dict.fromkeys(extra) if c is not None and c not in chosen]
    raise ManifestError(f"{source}: no {what} column; expected one of {', '.join(candidates)}, or numbered ones such "
                        f"as {candidates[0]}1, {candidates[0]}2 (found: {', '.join(map(str, columns))})")


def photos_in(values: dict, columns: list[str]) -> list[str]:
    """The photos one row names in ``columns`` (``photo_columns``), empty cells left out; a cell holding several,
    one a line (a JSON list, ``_read_table``) or URLs separated by "|" (eBay's PicURL), is as many photos."""
    from ..fetch import is_http_url

    out = []
    for column in columns:
        for value in str(values[column]).split("\n"):
            parts = [p.strip() for p in value.split("|")]
            out += parts if len(parts) > 1 and all(is_http_url(p) for p in parts if p) else [value.strip()]
    return [p for p in out if p]


def carried_names(columns, reserved) -> dict[str, str]:
    """Renames for the input columns a table carries into an output beside columns of its own
    (``reserved``): each input column of a reserved name becomes ``input_<name>``
    (``input_input_<name>`` if the input has that too, and so on), so neither hides the other."""
    taken, names = set(columns), {}
    for c in columns:
        if c in reserved:
            new = f"input_{c}"
            while new in taken:
                new = f"input_{new}"
            taken.add(new)
            names[c] = new
    return names


#: a web page's protocol-relative URL, ``//i.example.com/a.jpg`` (an ``<img src>`` copied as written): a host
#: name with a dot, then a path
_PROTOCOL_RELATIVE = re.compile(r"//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\d+)?/\S*")


def table_path(value: str, base: Path) -> str:
    """A file path as a table gives it, resolved against the table's folder ``base`` (absolute paths, URLs
    and, on another system, Windows paths kept: ``images.windows_path``; surrounding spaces dropped). A
    relative path written with Windows separators (``images\\ivory\\a.jpg``, a table made on Windows) is
    read with ``/`` when it does not exist as written. A protocol-relative URL (``//i.example.com/a.jpg``, as
    a web page's ``<img src>`` may be written) is read as ``https:`` when no such file is here."""
    value = str(value).strip()
    value = file_url_path(value) or value
    if _PROTOCOL_RELATIVE.fullmatch(value) and not Path(value).exists():
        return "https:" + value
    if not value or "://" in value or windows_path(value):  # C:\photos\a.jpg is not base/C:\photos\a.jpg
        return value
    path = value if Path(value).is_absolute() else str(base / value)
    if "\\" in value and not Path(path).exists():
        other = value.replace("\\", "/")
        other = other if Path(other).is_absolute() else str(base / other)
        if Path(other).exists():
            return other
    return path


def file_url_path(url: str) -> str | None:
    """The path a file URL names on this machine (``file:///photos/my%20a.jpg``: ``/photos/my a.jpg``; a
    Windows one, ``file:///C:/photos/a.jpg``, as ``C:/photos/a.jpg``), or None for anything else: another
    machine's (``file://server/share/a.jpg``), a path, another URL."""
    from urllib.parse import unquote, urlsplit

    if url[:7].lower() != "file://":
        return None
    parts = urlsplit(url)
    if parts.netloc.lower() not in ("", "localhost") or not parts.path:
        return None
    path = unquote(parts.path)
    return path[1:] if re.match(r"/[A-Za-z]:[/\\]", path) else path


def paths_hint(values, base: Path, checked: int = 1000) -> tuple[str, bool]:
    """What keeps a table's image paths from being read, in words ("" when nothing), and whether it holds for
    every path looked at (the table would be all errors): Windows paths on a machine that is not Windows
    (``images.windows_path``), and relative paths missing beside the table (``base``, where they are read from)
    but present beside the current folder (written from where the table's author stood). The first ``checked``
    paths that are neither URLs nor absolute here are looked at: a hint, not a check of every row."""
    cwd = Path.cwd()
    elsewhere = cwd.resolve() != Path(base).resolve()
    windows, beside, n = [], [], 0
    for value in values:
        value = str(value).strip()
        if not value or "://" in value or Path(value).is_absolute():
            continue
        n += 1
        if windows_path(value):
            windows.append(value)
        elif elsewhere and not (Path(base) / value).exists() and (cwd / value).exists():
            beside.append(value)
        if n >= checked:
            break
    said = []
    if windows:
        said.append(f"{len(windows)} image path(s) are Windows paths (e.g. {windows[0]}), which this machine "
                    f"cannot open: {WINDOWS_PATH_ADVICE}")
    if beside:
        said.append(f"{len(beside)} image path(s) are not beside the table but are beside the current folder (e.g. "
                    f"{beside[0]}): a table's relative paths are read from its own folder ({base}); write them from "
                    "there, or as absolute paths")
    return "; ".join(said), n > 0 and len(windows) + len(beside) == n


def _read_table(path: Path, lists: Sequence[str] = (), as_json: bool = False,
                pictures: Pictures | None = None) -> pd.DataFrame:
    """Any table format as text cells: a missing value is "", a whole number stored as a float (a
    JSON 2.0, a Parquet column with gaps) is "2"; a list or a mapping in a cell is refused, but for a list of
    values in a column named in ``lists`` (any case: a scraper's ``image_urls``), read as its values one a
    line (``photos_in`` takes each line as a photo), and, with ``as_json``, any other list or mapping, kept as
    its JSON text (a scraper's ``tags``, for a table whose other columns are only carried into outputs).
    ``pictures``: a workbook's pictures placed on its photo cells are those cells' photos (``_xlsx_pictures``)."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in JSON_LINES_SUFFIXES:
            df = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".json":
            df = _read_json_records(path)
        elif suffix == ".xlsx":  # the first sheet, its first row the header
            df = pd.read_excel(path, sheet_name=0, dtype=str, keep_default_na=False)
        else:
            df = _read_csv(path)
    except ManifestError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({' '.join(str(exc).split())})") from None
    df.columns = [str(c) for c in df.columns]  # a JSON line that is a list gives columns 0, 1, ...
    stripped = [c.strip() for c in df.columns]  # "listing_id, image": the header's " image" is "image"
    if len(set(stripped)) == len(stripped):
        df.columns = stripped
    if suffix == ".xlsx":
        import functools
        import zipfile

        import openpyxl

        keys = {column_key(c) for c in lists}
        with zipfile.ZipFile(path) as z:
            members = z.namelist()
        # the first sheet as openpyxl reads it (links, pictures), loaded once and only when one of them asks
        sheet = functools.cache(lambda: openpyxl.load_workbook(path, data_only=False).worksheets[0])
        # pictures placed in cells (read as the error #VALUE!), read for a caller that keeps pictures
        in_cells = _xlsx_cell_pictures(path) if pictures is not None and lists else {}
        failed = df.isna().to_numpy()  # pandas' NaN for a cell holding an Excel error, whatever the dtype
        if failed.any():
            df = df.mask(failed, "")
            _say_error_cells(path, df, failed, keys, set(in_cells), members)
        if lists:
            _xlsx_link_targets(path, df, keys, sheet)
            if pictures is not None and any(n.startswith("xl/media/") for n in members):
                _xlsx_pictures(path, df, keys, pictures, in_cells, sheet())
    if suffix in (".parquet", ".json", *JSON_LINES_SUFFIXES):  # typed cells; CSV and XLSX are read as text already
        listed = {column_key(c) for c in lists}
        for col in df.columns:
            chosen: dict = {}  # image objects offering sizes: the one taken, said once a column
            df[col] = [_cell(v, path, col, i, _named_in(col, listed), as_json, chosen)
                       for i, v in enumerate(df[col].tolist())]
            if chosen:
                (offered, taken), others = next(iter(chosen.items())), len(chosen) - 1
                log.warning("%s: column '%s' holds image objects offering the photo in several sizes: taking the "
                            "largest of each (%s of %s%s)", path, col, taken, ", ".join(offered),
                            f"; and {others} other set(s) of sizes" if others else "")
    return df


def _named_in(column, keys: set[str]) -> bool:
    """Whether ``column`` is one of ``keys`` (``column_key``s) or numbers one (``image2`` for ``image``)."""
    key = column_key(column)
    numbered = _NUMBERED.fullmatch(key)
    return key in keys or (numbered is not None and numbered.group(1) in keys)


#: a formula whose first argument is the photo's URL: a link, or the photo shown in the cell (Google Sheets'
#: and Excel 365's IMAGE, stored as _xlfn.IMAGE)
_LINK_FORMULA = re.compile(r'=\s*(?:_xlfn\.)?(?:HYPERLINK|IMAGE)\(\s*"((?:[^"]|"")*)"', re.IGNORECASE)


def _xlsx_link_targets(path: Path, df: pd.DataFrame, keys: set[str], open_sheet) -> None:
    """A sheet's photo cells (a column named in ``keys``, or numbering one) that are links, set to where they
    lead, in place: a cell showing "photo" or "see image" and linking to the URL (Excel's Insert > Link, or
    ``=HYPERLINK("https://...", "photo")``), or showing the photo (``=IMAGE("https://...")``), was read as the
    photo "photo" or as nothing, an error on every row. The
    workbook is opened again, whole (links are not read otherwise: ``open_sheet()``, openpyxl's first sheet), only when
    its sheets hold a link."""
    import zipfile

    def linked(name: str, z: zipfile.ZipFile) -> bool:
        data = z.read(name)
        return b"<hyperlink" in data or any(f in data.upper() for f in (b"HYPERLINK(", b"IMAGE("))

    with zipfile.ZipFile(path) as z:
        if not any(linked(n, z) for n in z.namelist() if n.startswith("xl/worksheets/") and n.endswith(".xml")):
            return
    sheet = open_sheet()  # pandas' sheet 0, read from A1
    for j, column in enumerate(df.columns):
        if not _named_in(column, keys):
            continue
        for i in range(len(df)):
            cell = sheet.cell(row=i + 2, column=j + 1)  # the header is row 1
            target = cell.hyperlink.target if cell.hyperlink is not None else None
            if not target and isinstance(cell.value, str) and (m := _LINK_FORMULA.match(cell.value.strip())):
                target = m.group(1).replace('""', '"')
            if target and target.strip():
                df.iat[i, j] = target.strip()


@dataclass
class Pictures:
    """Photos kept as files named by their content, ``folder/<SHA-256>.<format>``: the pictures of a workbook's
    photo cells (``_read_table``), a register import's fetched URLs (``Register._keep_fetched``). Each is named at
    once, and its bytes wait in ``found`` until the caller, its checks done, ``write``s them (a screening's
    folder, a register's ``photos/``)."""

    folder: Path
    found: dict[str, bytes] = field(default_factory=dict)

    def name(self, data: bytes) -> str:
        import hashlib

        from .images import image_format

        path = str(self.folder.resolve() / f"{hashlib.sha256(data).hexdigest()}.{image_format(data) or 'bin'}")
        self.found[path] = data
        return path

    def write(self) -> list[Path]:
        """The photos not yet in the folder (another run's, the server's: the same bytes), each written whole or
        not at all; returns those written. Stopped half-way (a full disk, Ctrl-C), it removes what it wrote."""
        from ..files import write_bytes_atomic

        written = []
        try:
            for name, data in self.found.items():
                if not Path(name).exists():
                    write_bytes_atomic(Path(name), data)
                    written.append(Path(name))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return written


def _say_error_cells(path: Path, df: pd.DataFrame, failed, keys: set[str], read: set, members: list[str]) -> None:
    """Warn of a sheet's cells that hold an Excel error (``failed``, read as empty): a formula that failed
    (``#N/A`` from a lookup, ``#REF!``), or, on a photo cell of a workbook with rich values, a picture placed in
    the cell (Excel 365's Place in Cell), which is read as ``#VALUE!``, unless its picture is ``read``
    (``_xlsx_cell_pictures``). Such a cell was NaN: a traceback for a photo cell, the text "nan" carried for
    another. ``members``: the workbook's parts."""
    from openpyxl.utils import get_column_letter

    photo = [_named_in(c, keys) for c in df.columns]
    rich = any(n.startswith("xl/richData/") for n in members)
    cells = [(i, j) for i, j in zip(*failed.nonzero()) if (i, j) not in read]
    in_cells = [(i, j) for i, j in cells if rich and photo[j]]
    if in_cells:
        log.warning("%s: %d photo cell(s) hold a picture placed in the cell (Excel 365's Place in Cell), which is not "
                    "read yet: select them, choose Place over Cells (right-click), save and run again", path,
                    len(in_cells))
    others = [f"{get_column_letter(j + 1)}{i + 2}" for i, j in cells if (i, j) not in in_cells]
    if others:
        log.warning("%s: %d cell(s) hold an Excel error (a formula that failed: #N/A, #VALUE!, #REF!...), read as "
                    "empty: %s%s", path, len(others), ", ".join(others[:5]), "..." if len(others) > 5 else "")


def _xlsx_cell_pictures(path: Path) -> dict[tuple[int, int], bytes]:
    """The pictures placed in cells of a workbook's first sheet (Excel 365's Place in Cell), by (row, column)
    from 0 below the header: each such cell holds a rich value (``vm``), which ``xl/metadata.xml`` leads to in
    ``xl/richData/rdrichvalue.xml``, whose local image identifier is a relation of ``richValueRel.xml`` to a file
    of ``xl/media/``. Empty when the workbook has none, or when a part of the chain is missing."""
    import posixpath
    import zipfile
    from xml.etree import ElementTree

    from openpyxl.utils.cell import coordinate_from_string, column_index_from_string

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def children(element, name: str) -> list:
        return [e for e in element.iter() if local(e.tag) == name]

    def attribute(element, name: str):
        return next((v for k, v in element.attrib.items() if local(k) == name), None)

    def rels(z, part: str) -> dict[str, str]:
        folder, name = posixpath.split(part)
        found = {}
        for rel in children(ElementTree.fromstring(z.read(f"{folder}/_rels/{name}.rels")), "Relationship"):
            target = rel.get("Target", "")
            found[rel.get("Id")] = target.lstrip("/") if target.startswith("/") else posixpath.normpath(
                posixpath.join(folder, target))
        return found

    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "xl/richData/rdrichvalue.xml" not in names:
                return {}
            first = children(ElementTree.fromstring(z.read("xl/workbook.xml")), "sheet")[0]
            sheet = rels(z, "xl/workbook.xml")[attribute(first, "id")]
            meta = ElementTree.fromstring(z.read("xl/metadata.xml"))
            future = next(f for f in children(meta, "futureMetadata") if f.get("name") == "XLRICHVALUE")
            values = [int(children(bk, "rvb")[0].get("i")) for bk in children(future, "bk")]
            value_of = [int(children(bk, "rc")[0].get("v")) for bk in children(
                children(meta, "valueMetadata")[0], "bk")]
            structures = [[k.get("n") for k in children(st, "k")] for st in children(
                ElementTree.fromstring(z.read("xl/richData/rdrichvaluestructure.xml")), "s")]
            rich = []
            for rv in children(ElementTree.fromstring(z.read("xl/richData/rdrichvalue.xml")), "rv"):
                keys = structures[int(rv.get("s", 0))]
                fields = dict(zip(keys, (v.text for v in children(rv, "v"))))
                rich.append(fields.get("_rvRel:LocalImageIdentifier"))
            relations = [attribute(r, "id") for r in children(ElementTree.fromstring(
                z.read("xl/richData/richValueRel.xml")), "rel")]
            media = rels(z, "xl/richData/richValueRel.xml")
            found = {}
            for cell in children(ElementTree.fromstring(z.read(sheet)), "c"):
                if cell.get("vm") is None:
                    continue
                image = rich[values[value_of[int(cell.get("vm")) - 1]]]
                if image is None:
                    continue  # a rich value that is no picture (a stock's or a place's data type)
                column, row = coordinate_from_string(cell.get("r"))
                found[(row - 2, column_index_from_string(column) - 1)] = z.read(media[relations[int(image)]])
            return found
    except (KeyError, IndexError, TypeError, ValueError, StopIteration, ElementTree.ParseError, zipfile.BadZipFile):
        log.warning("%s: pictures placed in cells could not be followed to their files: not read", path)
        return {}


def _xlsx_pictures(path: Path, df: pd.DataFrame, keys: set[str], pictures: Pictures, in_cells: dict,
                   sheet) -> None:
    """A sheet's pictures placed on its photo cells (a column named in ``keys``, or numbering one), as an
    officer's list of seized objects or a stolen-object list in Excel holds them (Insert > Pictures > Place
    over Cells): the cell a picture's top-left corner is in gets it as its photo, several one a line, in place
    (``pictures`` names and keeps the bytes). Such a cell was read as empty: "no image given" on every row. A
    photo typed in the cell wins over a picture on it; pictures elsewhere are warned of, not read. ``in_cells``:
    the pictures placed in cells (``_xlsx_cell_pictures``), each its cell's. ``sheet``: openpyxl's first sheet,
    pandas' sheet 0, read from A1 (the caller opens the workbook again, whole, only when it holds pictures)."""
    import openpyxl

    cells: dict[tuple[int, int], list[str]] = {}
    elsewhere, typed = [], 0
    placed = []  # (row, column, the picture's bytes when asked): over cells, then in cells
    for picture in sheet._images:  # (openpyxl's reader keeps them only there)
        corner = getattr(picture.anchor, "_from", None)  # an absolute anchor is on no cell
        i, j = (corner.row - 1, corner.col) if corner is not None else (-1, None)  # the header is sheet row 1
        placed.append((i, j, picture._data))
    placed += [(i, j, lambda data=data: data) for (i, j), data in in_cells.items()]
    for i, j, data in placed:
        if j is None or not (0 <= i < len(df) and j < len(df.columns) and _named_in(df.columns[j], keys)):
            elsewhere.append(f"{openpyxl.utils.get_column_letter(j + 1)}{i + 2}" if j is not None else "?")
        elif str(df.iat[i, j]).strip():
            typed += 1
        else:
            cells.setdefault((i, j), []).append(pictures.name(data()))
    for (i, j), files in cells.items():
        df.iat[i, j] = "\n".join(files)
    if elsewhere:
        log.warning("%s: %d picture(s) not read: not on a photo column's cell (on %s%s); head the column they "
                    "are on 'photo' and place each on its row", path, len(elsewhere), ", ".join(elsewhere[:3]),
                    "..." if len(elsewhere) > 3 else "")
    if typed:
        log.warning("%s: %d picture(s) not read: on a photo cell that names a photo too (the name is taken)", path,
                    typed)


def _read_json_records(path: Path) -> pd.DataFrame:
    """A ``.json`` table: an array of records (an API's or a database's export: ``[{"object_id": ..., "image_url":
    ...}, ...]``), or an object holding one such array beside other values (``{"total": 120, "objects": [...]}``);
    one record a line saved as ``.json`` is read as JSON Lines. Keys missing from a record are empty cells."""
    import io
    import json

    text = path.read_bytes().decode("utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # a second value after the first: JSON Lines under a .json name
            return pd.read_json(io.StringIO(text), lines=True, dtype=False)
        raise ManifestError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None

    def records(value) -> bool:
        return isinstance(value, list) and all(isinstance(r, dict) for r in value)

    if isinstance(data, dict):
        arrays = [k for k, v in data.items() if records(v) and v]
        if len(arrays) != 1:
            found = "the arrays " + ", ".join(arrays) if arrays else "none"
            raise ManifestError(f"{path}: a JSON object; expected an array of records ([{{...}}, {{...}}]) or an "
                                f"object holding one (found {found} among its keys {', '.join(list(data)[:10])})")
        data = data[arrays[0]]
    if not records(data):
        raise ManifestError(f"{path}: expected an array of records ([{{...}}, {{...}}]), one a row, found a JSON "
                            f"{type(data).__name__} holding other values")
    return pd.DataFrame.from_records(data)


def _cell(value, path: Path, column: str, i: int, listed: bool = False, as_json: bool = False,
          chosen: dict | None = None) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "__array__") and getattr(value, "ndim", 0):  # Parquet's lists come as arrays
        value = value.tolist()
    objects = [value] if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
    if listed and objects is not None and all(isinstance(v, (str, int, float, dict)) for v in objects):
        # an API's image object, or a list of them: its one URL (an object without one stays as its JSON text,
        # ``refuse_image_objects`` says why, should the column be the photos')
        urls = [_image_object_url(v, chosen) if isinstance(v, dict) else _cell(v, path, column, i) for v in objects]
        if None not in urls:
            return "\n".join(v for v in urls if v.strip())
    if as_json and isinstance(value, (list, tuple, dict)):
        import json

        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (list, tuple, dict, set)):
        raise ManifestError(f"{path}: column '{column}', {row_name(path, i)}: holds a {type(value).__name__}, "
                            "not a single value")
    if value is None or pd.isna(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _image_object_url(value: dict, chosen: dict | None = None) -> str | None:
    """A photo cell's mapping, an API's image object (eBay's ``{"imageUrl": ...}``, Shopify's ``{"src": ...,
    "width": ...}``): its one http(s) URL, or, when each of its URLs is one size of the photo (Etsy's
    ``url_75x75`` ... ``url_fullxfull``, Flickr's ``url_s`` ... ``url_o``: ``_image_size``), the largest one:
    the evidence at its best. None for an object with no URL, or with several not all named as sizes of one
    largest photo (``{"front": ..., "back": ...}`` are two photos: which to screen is the table's author's
    choice). ``chosen``: where a choice among sizes is noted, ``{keys offered: key taken}``, for one warning."""
    from ..fetch import is_http_url

    urls = {str(k): v.strip() for k, v in value.items() if isinstance(v, str) and is_http_url(v.strip())}
    if len(set(urls.values())) <= 1:
        return next(iter(urls.values()), None)
    sizes = {k: _image_size(k) for k in urls}
    if None in sizes.values():
        return None
    largest = max(sizes.values())
    taken = [k for k, size in sizes.items() if size == largest]
    if len({urls[k] for k in taken}) > 1:  # two URLs of the same size: no one photo to take
        return None
    if chosen is not None:
        chosen.setdefault(tuple(urls), taken[0])
    return urls[taken[0]]


#: the words an image object's keys name a photo's sizes by (Etsy, Flickr, Amazon, Unsplash, Pexels and the
#: like), as a long side in pixels, roughly: they only rank one object's URLs
_SIZE_WORDS = {
    **dict.fromkeys(("square", "portrait", "landscape", "crop", "cropped"), 1),  # a crop: below the whole photo
    **dict.fromkeys(("icon", "mini"), 64), "preview": 320, **dict.fromkeys(("tiny", "xs", "sq", "t"), 100),
    **dict.fromkeys(("thumb", "thumbnail", "thumbs", "q"), 150), **dict.fromkeys(("small", "sm", "s"), 240),
    "n": 320, "m": 500, **dict.fromkeys(("medium", "med", "md", "z"), 640), "c": 800,
    **dict.fromkeys(("regular", "standard", "std", "b"), 1024), **dict.fromkeys(("large", "lg", "big", "l"), 1280),
    "h": 1600, **dict.fromkeys(("xl", "xlarge", "large2x", "k"), 2048), **dict.fromkeys(("hires", "zoom"), 3000),
    **dict.fromkeys(("full", "fullsize", "fullxfull", "original", "orig", "o", "raw", "max", "maxres", "master"),
                    float("inf")),
}
#: words in an image object's keys that say "a URL", not which size: ``imageUrl``, ``url_570xN``, ``thumbUrl``
_URL_WORDS = frozenset(("url", "uri", "src", "href", "link", "image", "img", "photo", "picture", "pic", "source"))


def _image_size(key: str) -> float | None:
    """The size an image object's key names its URL by, in pixels (``_SIZE_WORDS``; ``570x456`` or ``570xN``:
    the larger number); a key that names no size (``url``, ``src``: the photo itself) counts as the largest;
    None for a key naming anything else (``descriptionurl``, ``front``), or two sizes."""
    key = re.sub(r"(\d+)x(\d+|N)\b", lambda m: f"_px{max(int(m[1]), int(m[2]) if m[2].isdigit() else 0)}_", key)
    words = re.split(r"[^a-z0-9]+", re.sub(r"(?<=[a-z])(?=[A-Z])", "_", key).lower())
    sizes = []
    for word in filter(None, words):
        for glued in ("url", "src"):  # thumburl, imagesrc
            if word.endswith(glued) and word != glued:
                word = word[: -len(glued)]
        if word in _URL_WORDS:
            continue
        size = int(word[2:]) if re.fullmatch(r"px\d+", word) else _SIZE_WORDS.get(word)
        if size is None:
            return None
        sizes.append(size)
    if len(sizes) > 1:
        return None
    return sizes[0] if sizes else float("inf")


def refuse_image_objects(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    """``ManifestError`` when a photo column (``photo_columns``) holds an image object ``_read_table`` could not
    take one URL from (kept as its JSON text), naming the first one's row and keys: such a cell was a photo
    named '{"url_75x75": ...', an error ("unsupported URL scheme") on every row."""
    import json

    for column in columns:
        for i, cell in enumerate(table[column]):
            if not cell.lstrip().startswith(("{", "[{")):
                continue
            try:
                value = json.loads(cell)
            except ValueError:
                continue  # a file whose name starts with a brace
            first = value if isinstance(value, dict) else next((v for v in value if isinstance(v, dict)
                                                                and _image_object_url(v) is None), {})
            urls = sum(1 for v in first.values() if isinstance(v, str) and "://" in v)
            raise ManifestError(f"{path}: column '{column}', {row_name(path, i)}: an image object with "
                                f"{urls or 'no'} URLs (keys: {', '.join(map(str, list(first)[:12]))}); expected "
                                "one photo URL or path a cell, or an object holding one http(s) URL, or several "
                                "named as sizes of one photo (url_170x135 ... url_fullxfull, thumb ... original: the "
                                "largest is taken)")


def row_name(path: Path, i: int) -> str:
    """Where the table's i-th row (from 0) is, as its user would look for it."""
    suffix = path.suffix.lower()
    if suffix in JSON_LINES_SUFFIXES:
        return f"line {i + 1}"
    if suffix == ".json":
        return f"record {i + 1}"
    if suffix == ".parquet":
        return f"row {i + 1}"
    if suffix == ".xlsx":
        return f"row {i + 2}"  # the sheet's header is row 1
    return f"line {i + 2}"  # a record spread over several lines by a quoted line break is counted as one


def _read_csv(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    # UTF-16 or UTF-32 with its byte-order mark (Excel's "Unicode Text", LibreOffice's UTF-16 CSV) was read as
    # Windows-1252: a header of 'ÿþl i s t i n g _ i d' and no column found
    wide = next((codec for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                                          (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
                 if raw.startswith(bom)), None)
    try:
        text = raw.decode(wide or "utf-8-sig")
    except UnicodeDecodeError as exc:
        if wide:
            raise ManifestError(f"{path}: starts as {wide.upper()} text but is not ({exc.reason} at byte "
                                f"{exc.start})") from None
        # Excel's "CSV" on Windows: the ANSI code page, not UTF-8
        log.warning("%s: not UTF-8; read as Windows-1252 (Western European), as Excel saves CSV on Windows: "
                    "check accented text, or save it as CSV UTF-8", path)
        text = raw.decode("cp1252", errors="replace")
    header = text.split("\n", 1)[0]
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    if sep == "," and "," not in header:  # a spreadsheet's export with another separator ("image;label")
        sep = next((c for c in CSV_SEPARATORS if c in header), ",")
        if sep != ",":
            log.info("%s: columns separated by %r", path, sep)
    return _read_csv_fields(path, text, sep)


def _read_csv_fields(path: Path, text: str, sep: str) -> pd.DataFrame:
    """pandas reads a first row with more fields than the header by making the extra leading ones
    the index, so every column moves one along (path <- label...) without a word: here the header
    decides, and a row whose extra fields hold anything is an error naming its line (a trailing
    separator, extra fields all empty, is read past)."""
    import csv
    import io
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(io.StringIO(text), sep=sep, index_col=False, dtype=str, keep_default_na=False,
                             skipinitialspace=True)  # "a.jpg, ivory": the value is "ivory"
        except pd.errors.ParserError as exc:  # a later row longer than the first ones
            found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
            if found is None:
                raise
            width, line, n = found.groups()
            raise ManifestError(f"{path}: line {line} has {n} fields, the header {width}: a value holding "
                                f"{sep!r} must be in double quotes") from None
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in seen):
        width = len(df.columns)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        next(reader, None)
        for row in reader:
            if any(cell.strip() for cell in row[width:]):
                raise ManifestError(f"{path}: line {reader.line_num} has {len(row)} fields, the header "
                                    f"{width}: a value holding {sep!r} must be in double quotes")
    return df


def _from_table(path: Path) -> tuple[pd.DataFrame, ManifestReport]:
    report = ManifestReport(str(path))
    raw = _read_table(path)
    if raw.empty:
        raise ManifestError(f"{path}: manifest has no rows")
    path_col, *more = photo_columns(raw.columns, PATH_COLUMNS, "image path", str(path))
    if more:  # image2, image_3...: their photos would have been left out without a word
        raise ManifestError(f"{path}: several photo columns ({', '.join([path_col, *more])}): a manifest names one "
                            "photo a row, with its label and object id; write a row for each photo")
    label_col = _pick(raw.columns, ("label",), "label", str(path))
    obj_col = _pick(raw.columns, OBJECT_COLUMNS, "object id", str(path), required=False)

    df = raw.copy()
    base = path.parent.resolve()
    df["path"] = [table_path(p, base) for p in raw[path_col].astype(str)]
    report.paths_hint = paths_hint(raw[path_col].astype(str), base)[0]
    df["label"] = raw[label_col].astype(str).str.strip()
    if obj_col is None:
        report.object_id_inferred = True
        df["object_id"] = df["path"]
    else:
        df["object_id"] = raw[obj_col].astype(str).str.strip()
        blank = df["object_id"].eq("")
        if blank.any():  # grouped together, they would be one "object" kept on one side of the split
            report.object_ids_blank = int(blank.sum())
            df.loc[blank, "object_id"] = df.loc[blank, "path"]
    for col in {path_col, label_col, obj_col} - {None, "path", "label", "object_id"}:
        df = df.drop(columns=col)

    empty = df["label"].eq("") | df["label"].str.lower().eq("nan")
    if empty.any():
        rows = ", ".join(row_name(path, i) for i in df.index[empty][:5])
        raise ManifestError(f"{path}: {int(empty.sum())} row(s) with an empty label ({rows}"
                            f"{'...' if empty.sum() > 5 else ''})")
    if "split" in df.columns:
        bad = ~df["split"].isin(SPLITS)
        if bad.any():
            raise ManifestError(
                f"{path}: split column has values {sorted(set(df.loc[bad, 'split']))}; allowed: {', '.join(SPLITS)}"
            )
    return df, report


def _case_clashes(labels: pd.Series) -> list[str]:
    """Labels that differ only in case, in words with their counts ("'Ivory' (1 rows) and 'ivory' (2
    rows)"): two classes, almost always a typing slip; said, not refused (object ids used as labels
    may differ only in case)."""
    counts = labels.value_counts()
    by_case: dict[str, list[str]] = {}
    for label in sorted(counts.index):
        by_case.setdefault(label.casefold(), []).append(label)
    return [" and ".join(f"'{n}' ({counts[n]} rows)" for n in names) for names in by_case.values() if len(names) > 1]


def _from_folder(root: Path) -> tuple[pd.DataFrame, ManifestReport]:
    label_root = root / "images" if (root / "images").is_dir() else root
    rows = []
    for label_dir in sorted(p for p in label_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (label_dir / LOCK_NAME).exists():  # a run's folder (train --out DATA/run1): its pictures are no label's
            log.warning("%s: an artsentry output folder (it holds %s), not a label: its images are not used",
                        label_dir, LOCK_NAME)
            continue
        for file in find_images(label_dir):
            rows.append({"path": str(file.resolve()), "label": label_dir.name, "object_id": str(file.resolve())})
    loose = [f for f in label_root.iterdir() if f.is_file() and is_image_file(f)]
    if loose and rows:
        log.warning("%s: %d image(s) outside any label folder not used, e.g. %s (a label folder holds its "
                    "images: <folder>/<label>/<image>)", label_root, len(loose), loose[0].name)
    if not rows:
        raise ManifestError(
            f"{root}: no images found; expected <folder>/<label>/<image> or <folder>/images/<label>/<image>, "
            "or a manifest CSV"
        )
    report = ManifestReport(str(root), object_id_inferred=True)
    return pd.DataFrame(rows), report


def read_manifest(source: str | Path) -> tuple[pd.DataFrame, ManifestReport]:
    """Read a manifest file or a dataset folder. Returns the table and a report."""
    source = Path(source)
    if not source.exists():
        raise ManifestError(f"{source}: no such file or folder")
    if source.is_dir():
        for name in MANIFEST_NAMES:
            if (source / name).is_file():
                df, report = _from_table(source / name)
                break
        else:
            df, report = _from_folder(source)
    else:
        df, report = _from_table(source)
    report.case_clashes = _case_clashes(df["label"])  # label columns and label folders alike

    exists = df["path"].map(lambda p: Path(p).is_file())
    if not exists.all():
        report.missing_files = df.loc[~exists, "path"].tolist()
        df = df[exists]
    if df.empty:
        urls = sum("://" in m for m in report.missing_files)
        raise ManifestError(f"{source}: none of the listed images exist" + (
            f" ({urls} are URLs: images are read from files; download them first)" if urls else ""))
    df = df.reset_index(drop=True)
    for line in report.lines():
        log.warning("%s: %s", source, line)
    return df, report


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Write a manifest as CSV (or Parquet by suffix) with absolute paths."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def label_counts(df: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in df["label"].value_counts().sort_index().items()}
