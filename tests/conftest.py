"""Shared fixtures: hostile image files, tiny synthetic datasets, and the real data in ../shared."""

from __future__ import annotations

import io
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

# `make test` runs the tests in one process per core (pytest-xdist). Each process, and every command its tests start,
# then computes on its share of the cores: PyTorch's default of a thread per core in each process made two processes
# fight for two cores (read before PyTorch loads: the test modules import it after this file).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _share = _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MET_IVORY = SHARED / "datasets" / "met-ivory"


def require_met_ivory() -> Path:
    if not (MET_IVORY / "metadata.csv").is_file():
        pytest.fail(f"real data missing: {MET_IVORY} (the shared/ folder must sit beside the repo)")
    return MET_IVORY


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (3 * width)
    body = zlib.compress(row * 16, 9)  # only a few rows of data; the header is the attack
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


@contextmanager
def web_host(respond):
    """A web server on 127.0.0.1 for tests that fetch image URLs (a shop, a CDN, a slow host): each GET
    is answered by ``respond(request)``, the request handler (``.path``, ``.headers``; ``reply`` writes a
    whole answer). Yields the base URL and the port."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            respond(self)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.shutdown()
        server.server_close()


def files_host(files: dict, seen: list | None = None):
    """``web_host`` serving ``files`` (path -> bytes; any other path 404), each path asked added to ``seen``."""
    def respond(request):
        if seen is not None:
            seen.append(request.path)
        body = files.get(request.path)
        reply(request, 200 if body is not None else 404, body or b"")

    return web_host(respond)


def workbook_with_pictures(path: Path, header: list, rows: list, pictures: dict, in_cells: dict | None = None) -> Path:
    """An XLSX as an officer makes one: ``header`` and ``rows`` as typed, and ``pictures`` (a cell such as
    "C2" -> an image file) placed over the cells (Insert > Pictures > Place over Cells), shrunk to 80 px;
    ``in_cells`` (cell -> image file) placed in the cells as Excel 365 writes them: the cell an error
    (#VALUE!) with a rich value (``vm``), led by xl/metadata.xml and xl/richData/ to the file in xl/media/
    (the parts artsentry reads; Excel's content types for them are left out)."""
    import re
    import zipfile

    import openpyxl
    from openpyxl.drawing.image import Image as SheetImage

    book = openpyxl.Workbook()
    sheet = book.active
    for row in [header, *rows]:
        sheet.append(row)
    for cell in in_cells or {}:
        sheet[cell] = "#VALUE!"
    for cell, file in pictures.items():
        picture = SheetImage(str(file))
        picture.width = picture.height = 80
        sheet.add_image(picture, cell)
    book.save(path)
    if not in_cells:
        return path
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    xml = parts["xl/worksheets/sheet1.xml"].decode()
    for n, cell in enumerate(in_cells, 1):
        xml, found = re.subn(rf'<c r="{cell}"', f'<c r="{cell}" vm="{n}"', xml)
        assert found == 1, cell
    parts["xl/worksheets/sheet1.xml"] = xml.encode()
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    count = len(in_cells)
    parts["xl/metadata.xml"] = (
        f'<metadata {ns} xmlns:xlrd="http://schemas.microsoft.com/office/spreadsheetml/2017/richdata">'
        '<metadataTypes count="1"><metadataType name="XLRICHVALUE" minSupportedVersion="120000"/></metadataTypes>'
        f'<futureMetadata name="XLRICHVALUE" count="{count}">'
        + "".join(f'<bk><extLst><ext uri="{{3e2802c4-a4d2-4d8b-9148-e3be6c30e623}}"><xlrd:rvb i="{n}"/></ext>'
                  '</extLst></bk>' for n in range(count))
        + f'</futureMetadata><valueMetadata count="{count}">'
        + "".join(f'<bk><rc t="1" v="{n}"/></bk>' for n in range(count)) + "</valueMetadata></metadata>").encode()
    parts["xl/richData/rdrichvaluestructure.xml"] = (
        '<rvStructures xmlns="http://schemas.microsoft.com/office/spreadsheetml/2017/richdata" count="1">'
        '<s t="_localImage"><k n="_rvRel:LocalImageIdentifier" t="i"/><k n="CalcOrigin" t="i"/></s>'
        "</rvStructures>").encode()
    parts["xl/richData/rdrichvalue.xml"] = (
        f'<rvData xmlns="http://schemas.microsoft.com/office/spreadsheetml/2017/richdata" count="{count}">'
        + "".join(f'<rv s="0"><v>{n}</v><v>5</v></rv>' for n in range(count)) + "</rvData>").encode()
    parts["xl/richData/richValueRel.xml"] = (
        f'<richValueRels xmlns="http://schemas.microsoft.com/office/spreadsheetml/2022/richvaluerel" {rel_ns}>'
        + "".join(f'<rel r:id="rId{n}"/>' for n in range(1, count + 1)) + "</richValueRels>").encode()
    parts["xl/richData/_rels/richValueRel.xml.rels"] = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(f'<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                  f'relationships/image" Target="../media/cell{n}{Path(file).suffix}"/>'
                  for n, file in enumerate(in_cells.values(), 1)) + "</Relationships>").encode()
    for n, file in enumerate(in_cells.values(), 1):
        parts[f"xl/media/cell{n}{Path(file).suffix}"] = Path(file).read_bytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def reply(request, status: int, body: bytes = b"", **headers) -> None:
    """A whole HTTP answer to ``request`` (headers named with ``_`` for ``-``: ``Retry_After``)."""
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name.replace("_", "-"), str(value))
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


def trickle(request, size: int, every: float) -> int:
    """A 200 answer to ``request`` of ``size`` bytes sent one at a time, ``every`` seconds apart (a host
    that never trips a per-read timeout); returns the bytes sent before the client hung up, if it did."""
    import time

    request.send_response(200)
    request.send_header("Content-Length", str(size))
    request.end_headers()
    for sent in range(size):
        try:
            request.wfile.write(b"x")
            request.wfile.flush()
        except OSError:  # the client hung up
            return sent
        time.sleep(every)
    return size


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def object_photo(colour, size=(120, 90), seed=0) -> Image.Image:
    """A 'studio photo': a coloured blob on a light background, with a little noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.full((h, w, 3), 235, np.uint8)
    cx, cy = w // 2 + rng.integers(-10, 10), h // 2 + rng.integers(-8, 8)
    yy, xx = np.mgrid[:h, :w]
    mask = ((xx - cx) / (w * 0.25)) ** 2 + ((yy - cy) / (h * 0.3)) ** 2 < 1
    arr[mask] = np.asarray(colour, np.uint8)
    arr = np.clip(arr.astype(int) + rng.integers(-12, 12, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def quarters(images, cell=(240, 180)) -> Image.Image:
    """A 'lot photo': four pictures, one per quarter (top left, top right, bottom left, bottom
    right), each resized to ``cell``, on a light background."""
    w, h = cell
    lot = Image.new("RGB", (2 * w, 2 * h), (235, 235, 235))
    for img, xy in zip(images, [(0, 0), (w, 0), (0, h), (w, h)]):
        lot.paste(Image.open(img).convert("RGB").resize(cell) if isinstance(img, (str, Path)) else img.resize(cell), xy)
    return lot


def synthetic_lot(synthetic_dataset: Path, ivory: bool = True) -> Image.Image:
    """Blue 'non-ivory' blobs of the synthetic dataset, with a cream 'ivory' one in the bottom-right
    quarter (or a fourth blue one)."""
    blue = sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[:3]
    last = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0] if ivory else blue[0]
    return quarters(blue + [last])


def wide_lot(synthetic_dataset: Path) -> Image.Image:
    """A 2:1 lot photo (1600 x 800) of a blue 'non-ivory' object with a cream 'ivory' one in its bottom-right tile
    of a 3 x 3 scan ((800, 400, 1600, 800)): wider than the 4:3 ``fit`` keeps of a photo whole."""
    blue = sorted((synthetic_dataset / "non_ivory").glob("*.jpg"))[0]
    cream = sorted((synthetic_dataset / "ivory").glob("*.jpg"))[0]
    lot = Image.open(blue).convert("RGB").resize((1600, 800))
    lot.paste(Image.open(cream).convert("RGB").resize((800, 400)), (800, 400))
    return lot


def metobjects_csv(path: Path, rows: list[dict]) -> None:
    """A MetObjects.csv (the museum's bulk export: its column names, UTF-8 with a BOM) of ``rows``, each a
    dict of column -> text; columns a row leaves out are empty."""
    import csv

    cols = ["Object Number", "Is Highlight", "Is Public Domain", "Object ID", "Department", "Object Name", "Title",
            "Culture", "Medium", "Classification", "Object Begin Date", "Object End Date", "Link Resource"]
    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c, "") for c in cols])


def abc_register(folder: Path, photos: dict):
    """A new register of objects A, B and C (two photos each, titled 'Object A'...), left open."""
    from artsentry.index import Register

    reg = Register.create(folder)
    for name in "ABC":
        reg.add(name, photos[name][0], title=f"Object {name}")
    return reg


def register_lot(photos: dict) -> Image.Image:
    """Registered object A, photographed again, in the bottom-right quarter; three unknown things."""
    return quarters([photos["unknown"]] * 3 + [photos["A"][1]], cell=(160, 120))


@pytest.fixture
def hostile_dir(tmp_path) -> Path:
    """One file per hostile case, named by what it is; values say what to expect."""
    d = tmp_path / "hostile"
    d.mkdir()
    good = object_photo((200, 180, 150))
    (d / "zero_bytes.jpg").write_bytes(b"")
    full = jpeg_bytes(good, quality=90)
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (1, 1), (255, 255, 255)).save(d / "tracking_pixel.gif")  # what scraped listing pages carry
    good.convert("CMYK").save(d / "cmyk.jpg", format="JPEG")
    grey16 = (np.linspace(0, 65535, 120 * 90).reshape(90, 120)).astype(np.uint16)
    Image.fromarray(grey16).save(d / "grey16.png")
    pal = good.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(d / "palette_transparent.png", transparency=0)
    good.save(d / "good.jpg", quality=90)
    return d


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A labelled folder: 'ivory' = cream blobs, 'non_ivory' = blue blobs; 24 images each."""
    root = tmp_path_factory.mktemp("synthetic")
    for label, colour in (("ivory", (235, 220, 190)), ("non_ivory", (40, 70, 160))):
        (root / label).mkdir()
        for i in range(24):
            jitter = np.random.default_rng(i).integers(-25, 25, 3)
            c = tuple(int(v) for v in np.clip(np.array(colour) + jitter, 0, 255))
            object_photo(c, seed=i + (0 if label == "ivory" else 1000)).save(root / label / f"{label}_{i:03d}.jpg")
    return root


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Three objects, two photos each, plus a re-photographed query of each and an unknown object."""
    d = tmp_path_factory.mktemp("objects")
    colours = {"A": (200, 40, 40), "B": (40, 160, 60), "C": (50, 60, 200)}
    out = {}
    for name, c in colours.items():
        paths = []
        for k in range(2):
            img = object_photo(c, size=(160, 120), seed=k + ord(name))
            p = d / f"{name}_{k}.jpg"
            img.save(p)
            paths.append(str(p))
        query = object_photo(c, size=(160, 120), seed=99 + ord(name)).rotate(8, fillcolor=(235, 235, 235))
        query = query.crop((10, 8, 150, 115))
        qp = d / f"{name}_query.jpg"
        query.save(qp, quality=60)
        out[name] = (paths, str(qp))
    unknown = d / "unknown.jpg"
    Image.new("RGB", (160, 120), (20, 20, 20)).save(unknown)
    out["unknown"] = str(unknown)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, synthetic_dataset) -> Path:
    """A small frozen-backbone lite0 model trained on ``synthetic_dataset`` (64 px), shared
    by the tests that only need some trained model; they must not modify it."""
    from artsentry.train import TrainSettings, train

    run = tmp_path_factory.mktemp("frozen") / "run"
    settings = TrainSettings(mode="frozen", image_size=64, val_fraction=0.25, test_fraction=0.25)
    return train(synthetic_dataset, run, settings, progress=False).model_dir


@pytest.fixture(scope="session")
def culture_dataset(tmp_path_factory) -> Path:
    """A three-class labelled folder (red, green, blue blobs), standing in for a culture model's data."""
    root = tmp_path_factory.mktemp("three")
    for label, colour in (("red", (200, 40, 40)), ("green", (40, 160, 60)), ("blue", (50, 60, 200))):
        (root / label).mkdir()
        for i in range(12):
            jitter = np.random.default_rng(i).integers(-25, 25, 3)
            c = tuple(int(v) for v in np.clip(np.array(colour) + jitter, 0, 255))
            object_photo(c, seed=i + 7 * len(label)).save(root / label / f"{label}_{i:03d}.jpg")
    return root


@pytest.fixture(scope="session")
def culture_model_dir(tmp_path_factory, culture_dataset) -> Path:
    """A small frozen-backbone three-class model (64 px) on ``culture_dataset``."""
    from artsentry.train import TrainSettings, train

    run = tmp_path_factory.mktemp("three-model") / "run"
    settings = TrainSettings(mode="frozen", image_size=64, val_fraction=0.25, test_fraction=0.25)
    return train(culture_dataset, run, settings, progress=False).model_dir


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_fresh_process(argvs: list[list[str]]):
    """``artsentry.cli.main(argv)`` for each of ``argvs`` in one new Python process, as a user's commands start: its
    result with each command's output, then an ``exit N`` line for it (a usage error's too), then whether PyTorch
    was imported (the process's last line, ``True`` or ``False``)."""
    import subprocess
    import sys

    probe = ("import sys; from artsentry.cli import main\n"
             f"for argv in {argvs!r}:\n"
             "    try: code = main(argv)\n"
             "    except SystemExit as exc: code = exc.code\n"
             "    print('exit', code, flush=True)\n"
             "print('torch' in sys.modules)")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)


@contextmanager
def running(cmd: list[str], **kw):
    """``cmd`` started as a process (its output captured as text), killed at the end if it still runs: a test
    that fails half-way leaves no server behind."""
    import subprocess

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@contextmanager
def register_locked(folder: Path):
    """Another process's change to the register in ``folder`` under way (``register import`` in a terminal,
    between two of its chunks' commits): the database's write lock held until the block ends."""
    import sqlite3

    db = sqlite3.connect(Path(folder) / "register.sqlite", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("COMMIT")
        db.close()
