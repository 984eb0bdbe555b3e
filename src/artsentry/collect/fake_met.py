"""A local stand-in for The Met Collection API, with switchable faults.

It speaks the same JSON as ``https://collectionapi.metmuseum.org/public/collection/v1``
(``/objects``, ``/objects/{id}``, ``/search``, ``/departments``) and serves
image bytes for the ``primaryImage`` / ``primaryImageSmall`` /
``additionalImages`` URLs it hands out. Records are generated from the object
id and a seed, so two servers with the same settings agree byte for byte.

Faults (``Faults``), each a probability per request:

- persistent, decided by the object or image id (the same on every attempt):
  ``not_found`` (a listed id whose record answers 404 ``{"message": "ObjectID
  not found"}``), ``broken_image`` (an image URL that answers 404);
- transient, drawn afresh on every request: ``rate_limit`` (429, half with
  ``Retry-After``), ``forbidden`` (403, half with ``Retry-After``, as the
  museum's CDN answers when throttling), ``server_error`` (500), ``slow``
  (answers after ``slow_seconds``, past a client's timeout), ``truncated``
  (announces more bytes than it sends), ``invalid_json`` (200 with a body that
  is not JSON; on image URLs, bytes that are not an image).

Every request's arrival time and path is logged in ``server.log`` so tests
can measure the request rate the client really produced.

Run by hand: ``python -m artsentry.collect.fake_met --port 8765 --objects 2000``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from PIL import Image

API = "/public/collection/v1"

DEPARTMENTS = [
    (1, "American Decorative Arts"), (3, "Ancient Near Eastern Art"), (4, "Arms and Armor"),
    (5, "Arts of Africa, Oceania, and the Americas"), (6, "Asian Art"), (10, "Egyptian Art"),
    (11, "European Paintings"), (12, "European Sculpture and Decorative Arts"), (13, "Greek and Roman Art"),
    (14, "Islamic Art"), (17, "Medieval Art"), (21, "Modern Art"),
]
MEDIA = [
    "Ivory", "Ivory, gold", "Elephant ivory", "Walrus ivory", "Watercolor on ivory", "Bone, ivory",
    "Ivory with traces of paint", "Porcelain", "Hard-paste porcelain", "Earthenware", "Stoneware",
    "Terracotta", "Oil on canvas", "Ink and color on silk", "Ink and color on paper", "Bronze", "Wood",
    "Glazed earthenware", "Porcelain painted with cobalt blue under transparent glaze",
]
CULTURES = ["China", "Japan", "American", "India (Gujarat)", "North India", "French", "Egypt", "", "Italian",
            "Korea", "British", "India"]
CLASSIFICATIONS = ["Ivories", "Ceramics", "Paintings", "Sculpture", "Miniatures", "Metalwork", "Prints", ""]
OBJECT_NAMES = ["Figure", "Vase", "Box", "Plaque", "Bowl", "Hanging scroll", "Painting", "Portrait miniature"]


@dataclass
class Faults:
    not_found: float = 0.0
    broken_image: float = 0.0
    rate_limit: float = 0.0
    forbidden: float = 0.0
    server_error: float = 0.0
    slow: float = 0.0
    truncated: float = 0.0
    invalid_json: float = 0.0
    slow_seconds: float = 3.0

    @classmethod
    def uniform(cls, p: float, slow_seconds: float = 3.0) -> "Faults":
        return cls(p, p, p, p, p, p, p, p, slow_seconds)

    def transient(self) -> list[tuple[str, float]]:
        return [(k, getattr(self, k)) for k in ("rate_limit", "forbidden", "server_error", "slow", "truncated",
                                                "invalid_json")]


def _unit(*parts) -> float:
    """Deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class FakeMet:
    """The collection: ids, records and images, generated from ``seed``."""

    n_objects: int = 2000
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    image_size: tuple[int, int] = (96, 72)

    def __post_init__(self):
        rng = random.Random(self.seed)
        self.ids = sorted(rng.sample(range(1, self.n_objects * 20), self.n_objects))
        self._id_set = set(self.ids)

    def exists(self, object_id: int) -> bool:
        return object_id in self._id_set and _unit(self.seed, "404", object_id) >= self.faults.not_found

    def record(self, object_id: int, base: str) -> dict:
        r = random.Random(f"{self.seed}-{object_id}")
        dept_id, dept = r.choice(DEPARTMENTS)
        has_image = r.random() < 0.85
        n_extra = r.choice([0, 0, 1, 2, 3]) if has_image else 0
        img = lambda k, kind: f"{base}/images/{kind}/{object_id}_{k}.jpg"  # noqa: E731
        medium = r.choice(MEDIA)
        return {
            "objectID": object_id,
            "isHighlight": r.random() < 0.05,
            "accessionNumber": f"{r.randint(10, 2020)}.{r.randint(1, 999)}",
            "isPublicDomain": has_image,
            "primaryImage": img(0, "original") if has_image else "",
            "primaryImageSmall": img(0, "web-large") if has_image else "",
            "additionalImages": [img(k, "original") for k in range(1, n_extra + 1)],
            "constituents": None,
            "department": dept,
            "objectName": r.choice(OBJECT_NAMES),
            "title": f"Object {object_id}",
            "culture": r.choice(CULTURES),
            "period": "",
            "dynasty": "",
            "objectDate": f"{r.randint(1, 19)}th century",
            "objectBeginDate": r.randint(0, 1900),
            "objectEndDate": r.randint(1900, 1950),
            "medium": medium,
            "dimensions": f"H. {r.randint(2, 60)} cm",
            "classification": "Ivories" if "vory" in medium and "on ivory" not in medium else r.choice(CLASSIFICATIONS),
            "country": "",
            "region": "",
            "tags": None,
            "objectURL": f"https://www.metmuseum.org/art/collection/search/{object_id}",
            "_departmentId": dept_id,
        }

    def image_bytes(self, object_id: int, k: int, small: bool) -> bytes:
        r = random.Random(f"{self.seed}-img-{object_id}-{k}")
        w, h = self.image_size
        if small:
            w, h = w // 2, h // 2
        img = Image.new("RGB", (w, h), tuple(r.randint(0, 255) for _ in range(3)))
        img.paste(tuple(r.randint(0, 255) for _ in range(3)), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    def search(self, params: dict[str, str], base: str) -> list[int]:
        out = []
        q = params.get("q", "").lower()
        media = [m.strip().lower() for m in params.get("medium", "").split("|") if m.strip()]
        dept = params.get("departmentId")
        has_images = params.get("hasImages", "").lower() == "true"
        culture = params.get("artistOrCulture", "").lower() == "true"
        for oid in self.ids:
            rec = self.record(oid, base)
            # the museum's `medium` matches "the specified medium or object type" (its examples: Ceramics,
            # Furniture, Paintings): the medium text or the classification
            if media and not any(m in rec["medium"].lower() or m in rec["classification"].lower() for m in media):
                continue
            if dept and str(rec["_departmentId"]) != dept:
                continue
            if has_images and not rec["primaryImage"]:
                continue
            fields = [rec["culture"]] if culture else [rec["title"], rec["medium"], rec["culture"], rec["objectName"],
                                                       rec["classification"]]
            if q and q != "*" and not any(q in f.lower() for f in fields):
                continue
            out.append(oid)
        return out


class _Handler(BaseHTTPRequestHandler):
    server: "FakeMetServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None,
              announce: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(announce if announce is not None else len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if announce is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode())

    def do_GET(self):  # noqa: N802
        srv = self.server
        with srv.lock:
            srv.log.append((time.monotonic(), self.path))
        url = urlparse(self.path)
        path = url.path
        met = srv.met
        fault = srv.draw_fault()
        if fault == "slow":
            time.sleep(met.faults.slow_seconds)
        elif fault in ("rate_limit", "forbidden"):
            headers = {"Retry-After": "1"} if srv.rng_unit() < 0.5 else {}
            status = 429 if fault == "rate_limit" else 403
            return self._send(status, b'{"message": "Too many requests"}', headers=headers)
        elif fault == "server_error":
            return self._json(500, {"message": "Internal Server Error"})
        base = srv.base_url
        is_image = path.startswith("/images/")
        if is_image:
            return self._image(path, fault)
        if not path.startswith(API):
            return self._json(404, {"message": "Not Found"})
        path = path[len(API):]
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if path == "/departments":
            body = {"departments": [{"departmentId": i, "displayName": n} for i, n in DEPARTMENTS]}
        elif path == "/objects":
            ids = met.ids
            if "departmentIds" in params:
                wanted = {int(x) for x in params["departmentIds"].split("|") if x.strip().isdigit()}
                ids = [i for i in ids if met.record(i, base)["_departmentId"] in wanted]
            body = {"total": len(ids), "objectIDs": ids}
        elif path == "/search":
            ids = met.search(params, base)
            body = {"total": len(ids), "objectIDs": ids or None}
        elif path.startswith("/objects/"):
            tail = path[len("/objects/"):]
            if not tail.isdigit() or not met.exists(int(tail)):
                return self._json(404, {"message": "ObjectID not found"})
            body = met.record(int(tail), base)
            body.pop("_departmentId")
        else:
            return self._json(404, {"message": "Not Found"})
        data = json.dumps(body).encode()
        if fault == "invalid_json":
            return self._send(200, b"<html>Service Unavailable</html>" + data[:20])
        if fault == "truncated":
            return self._send(200, data[: len(data) // 2], announce=len(data))
        return self._send(200, data)

    def _image(self, path: str, fault: str | None):
        met = self.server.met
        try:
            kind, name = path.split("/")[2:4]
            oid, k = (int(x) for x in name.removesuffix(".jpg").split("_"))
        except ValueError:
            return self._json(404, {"message": "Not Found"})
        if not met.exists(oid) or _unit(met.seed, "broken", oid, k) < met.faults.broken_image:
            return self._send(404, b"<html>Not Found</html>", ctype="text/html")
        data = met.image_bytes(oid, k, small=kind == "web-large")
        if fault == "invalid_json":
            return self._send(200, b"<html>error page</html>", ctype="text/html")
        if fault == "truncated":
            return self._send(200, data[: len(data) // 2], ctype="image/jpeg", announce=len(data))
        return self._send(200, data, ctype="image/jpeg")


class FakeMetServer(ThreadingHTTPServer):
    """``with FakeMetServer(FakeMet(...)) as srv: srv.api_url ...`` serves on 127.0.0.1 in a thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, met: FakeMet, port: int = 0, seed: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.met = met
        self.lock = threading.Lock()
        self.log: list[tuple[float, str]] = []
        self._rng = random.Random(seed + 7919)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API

    def rng_unit(self) -> float:
        with self.lock:
            return self._rng.random()

    def draw_fault(self) -> str | None:
        u = self.rng_unit()
        acc = 0.0
        for name, p in self.met.faults.transient():
            acc += p
            if u < acc:
                return name
        return None

    def start(self) -> "FakeMetServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> "FakeMetServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def max_requests_per_window(self, window: float = 1.0) -> int:
        """Most requests that arrived within any ``window`` seconds."""
        times = sorted(t for t, _ in self.log)
        best, j = 0, 0
        for i, t in enumerate(times):
            while t - times[j] >= window:
                j += 1
            best = max(best, i - j + 1)
        return best


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve a fake Met Collection API on 127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fault-rate", type=float, default=0.0, help="probability of each kind of fault")
    ap.add_argument("--slow-seconds", type=float, default=3.0)
    a = ap.parse_args()
    srv = FakeMetServer(FakeMet(a.objects, a.seed, Faults.uniform(a.fault_rate, a.slow_seconds)), a.port, a.seed)
    print(f"fake Met API at {srv.api_url}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
