"""What the server does with one photo, independent of HTTP: the loaded models, the
register, and ``Analyzer.analyze(bytes) -> dict``. Kept apart from the web layer so it
can be tested, and timed, on its own."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.images import DEFAULT_MAX_PIXELS, ImageLoadError, describe_content, load_image
from ..data.images import image_format as sniff  # the formats the server accepts, by content
from ..data.quality import assess_quality, warnings_text
from ..htmlembed import thumbnail_uri


@functools.lru_cache(maxsize=4096)
def _thumbnail(path: str, mtime_ns: int, file_size: int) -> str | None:
    """A register photo's thumbnail (data URI, ~10 kB), keyed by the file's state: a file changed in place
    is read again, and the cache stays bounded however many objects a long-running server shows."""
    return thumbnail_uri(path, size=160)


class LotsUnavailable(ValueError):
    """A lot scan was asked of a server whose model cannot do one."""


@dataclass
class ServeSettings:
    model: Path | None = None          # ivory (or any binary) classifier folder
    culture_model: Path | None = None  # a second, multi-class classifier (e.g. culture of a painting)
    register: Path | None = None
    token: str | None = None           # register writes need "Authorization: Bearer <token>"
    max_upload_bytes: int = 20_000_000  # 20 MB, decimal as every size stated
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_url_fetch: bool = False
    url_allowlist: tuple[str, ...] = ()  # host names; empty = any host once fetching is enabled
    fetch_seconds: float = 30.0        # one URL's whole download, however slowly its host sends
    cors_origins: tuple[str, ...] = ()
    inference_workers: int = 1
    max_queue: int = 32                # requests waiting for a worker before 503
    max_listing_photos: int = 24       # photos in one POST /v1/listing
    retry_after_s: int = 2
    top_k: int = 5
    explain_method: str = "gradcam"
    runtime: str = "auto"
    audit_log: Path | None = None      # JSON lines: every analysis and register change (serve.audit)
    register_busy_seconds: float = 10.0  # a register change waits this long for another process's, then 503


class Analyzer:
    """Loads the models and the register once; ``analyze`` is thread-safe (register
    writes and reads are serialised by a lock)."""

    def __init__(self, settings: ServeSettings):
        from ..models.artifact import resolve_model_dir
        from ..inference import Predictor

        self.settings = settings
        self.lock = threading.RLock()
        self.ivory = None
        self.culture = None
        self.register = None
        self._explainers: dict[str, object] = {}
        if settings.model is not None:
            self.ivory = Predictor.load(resolve_model_dir(settings.model), runtime=settings.runtime)
        if settings.culture_model is not None:
            self.culture = Predictor.load(resolve_model_dir(settings.culture_model), runtime=settings.runtime)
        if settings.register is not None:
            from ..index.register import Register

            # the server's worker threads share it; every use is under self.lock
            self.register = Register.open(settings.register, shared=True, busy_seconds=settings.register_busy_seconds)
            self.register.embedder  # loaded now: an embedder changed since the vectors is refused at the start
        if self.ivory is None and self.culture is None and self.register is None:
            raise ValueError("nothing to serve: give a model, a culture model or a register")

    # -- description ---------------------------------------------------------------------
    def models(self) -> dict:
        out = {}
        for key, p in (("ivory", self.ivory), ("culture", self.culture)):
            if p is not None:
                out[key] = p.info() | {"labels": p.labels}
                if key == "ivory":  # the tile scan's threshold (lots=true), None when not measured
                    out[key]["lot_threshold"] = (p.config.get("lots") or {}).get("threshold")
        if self.register is not None:
            with self.lock:
                out["register"] = self.register.info()  # as 'artsentry register info' prints it
        return out

    # -- analysis ------------------------------------------------------------------------
    def _explainer(self, key: str):
        if key not in self._explainers:
            from ..explain import ClassifierExplainer

            self._explainers[key] = ClassifierExplainer(self.ivory if key == "ivory" else self.culture)
        return self._explainers[key]

    def _thumb(self, object_id: str) -> str | None:
        """A thumbnail of the object's first readable photo, as the register holds it now (another
        process may have replaced the object's photos), made once per photo file state."""
        for name in (self.register.get(object_id) or {}).get("photos", []):
            try:  # names come from the register database, never the request
                st = os.stat(name)
            except (OSError, ValueError):
                continue
            uri = _thumbnail(name, st.st_mtime_ns, st.st_size)
            if uri:
                return uri
        return None

    def analyze(self, data: bytes, *, explain: bool = True, k: int | None = None, lots: bool = False) -> dict:
        """Everything known about one photo. ``data`` must already have passed ``sniff``;
        unreadable or oversized images raise ``ImageLoadError``. ``lots``: the ivory decision is
        the tile scan's (``artsentry.lots``) at the model's lot threshold, ``LotsUnavailable``
        when it has none."""
        lot_setting = register_lot_threshold = None
        if lots:
            from ..lots import lot_threshold

            if self.ivory is not None:
                if not self.ivory.binary:
                    raise LotsUnavailable("lots=true needs a two-class model")
                try:
                    lot_setting = lot_threshold(self.ivory.config)
                except ValueError as exc:
                    raise LotsUnavailable(str(exc)) from None
            if self.register is not None:
                from ..index.register import RegisterError

                try:
                    with self.lock:
                        register_lot_threshold = self.register.required_lot_threshold()
                except RegisterError as exc:
                    raise LotsUnavailable(str(exc)) from None
        from ..explain.overlay import heat_rgba, photo_and_heat
        from ..htmlembed import jpeg_uri, png_uri
        from ..lots import TILE_GRID, decode_draft

        t0 = time.perf_counter()
        sha = hashlib.sha256(data).hexdigest()
        # decoded as `screen` decodes it for the same models (one of them alone: as `predict` or `register
        # search` does): the same photo gets the same scores here and there
        readers = [(p.preprocessing, lot_setting[1] if key == "ivory" and lot_setting else None)
                   for key, p in (("ivory", self.ivory), ("culture", self.culture)) if p is not None]
        if self.register is not None:
            with self.lock:
                readers.append((self.register.embedder.preprocessing, TILE_GRID if lots else None))
        img = load_image(data, name="upload", max_bytes=self.settings.max_upload_bytes,
                         max_pixels=self.settings.max_pixels, draft_size=decode_draft(readers) if readers else None)
        width, height = img.info["upright_size"]  # the file's, not the decoded size
        out: dict = {"image": {"sha256": sha, "width": width, "height": height, "bytes": len(data),
                               "quality": assess_quality(img).to_dict()}}
        heat_source = lot_scan = None
        for key, p in (("ivory", self.ivory), ("culture", self.culture)):
            if p is None:
                continue
            x = p.transform(img).unsqueeze(0)
            probs = p.proba_tensor(x)[0]
            info = p.info()
            decided = p.decide("upload", probs)  # the label is the decision: at the threshold for binary models
            block = {"model": {"name": info["name"], "version": info["version"], "runtime": info["runtime"]},
                     "label": decided.label, "probabilities": {l: round(float(v), 6) for l, v in zip(p.labels, probs)}}
            if p.binary:
                t = info["threshold"]
                block.update({"positive_label": p.positive_label, "probability": round(decided.score, 6),
                              "threshold": t, "decision": "flag" if decided.flagged else "pass"})
                if key == "ivory" and lot_setting is not None:
                    from ..lots import scan

                    lot_t, grid = lot_setting
                    r = lot_scan = scan(p, [img], lot_t, grid=grid)[0]
                    block.update({"label": p.decision_label(r.flagged),
                                  "probability": round(r.score, 6), "threshold": lot_t,
                                  "decision": "flag" if r.flagged else "pass",
                                  "lot": {"whole_probability": round(r.whole, 6),
                                          "box": list(r.box) if r.box else None, "model_threshold": t}})
            out[key] = block
            if heat_source is None:
                heat_source = (key, x, p)
        if self.register is not None:
            from ..index.register import is_match

            k = k or self.settings.top_k
            with self.lock:
                emb = self.register.embedder
                if lots:  # the whole photo and its tiles, each object by its best crop
                    from ..lots import LotTransform

                    vecs = emb.embed_tensor(LotTransform(emb.transform, TILE_GRID)(img))
                    found = self.register.search_tiles(vecs, k)
                    threshold = register_lot_threshold
                else:
                    found = self.register.search_vectors(emb.embed_tensor(emb.transform(img).unsqueeze(0)), k)[0]
                    threshold = self.register.threshold
                matches = []
                for m in found:
                    d = {"object_id": m.object_id, "score": m.score, "similarity": m.similarity, "title": m.title,
                         "department": m.department,
                         "source": m.source, "status": m.status, "photo": self._thumb(m.object_id)}
                    d["matched"] = is_match([m], threshold)  # this match alone; None: undecided
                    if lots:
                        d["box"] = list(m.box) if m.box else None
                    matches.append(d)
            decided = is_match(found, threshold)
            out["register"] = {"threshold": threshold, "scoring": self.register.scoring,
                               "no_match": None if decided is None else not decided, "matches": matches}
        if explain and heat_source is not None:
            key, x, p = heat_source
            engine = self._explainer(key)
            box = tile = None
            if key == "ivory" and lot_scan is not None:
                from ..lots import deciding_tile

                box = (0, 0, *img.size)  # drawn on the whole photo, uncut, where the page outlines the tile
                flagged_for = deciding_tile(img, lot_scan, lot_setting[1])
                if flagged_for is not None:  # flagged for one tile: that tile's evidence
                    x, box, tile = p.transform(flagged_for[0]).unsqueeze(0), flagged_for[1], list(lot_scan.box)
            # the evidence for the decision given: a lot flagged for one tile may read as the other class whole
            heat, probs, idx = engine.explain_tensor(x, self.settings.explain_method, out[key]["label"])
            shown, h = photo_and_heat(img, heat[0], p.preprocessing, display=512,
                                      method=self.settings.explain_method, box=box)
            layer = heat_rgba(h)
            out["overlay"] = {"model": key, "method": self.settings.explain_method, "target": p.labels[idx[0]],
                              "width": shown.width, "height": shown.height,
                              "png": png_uri(layer), "photo": jpeg_uri(shown), "box": tile}
        out["seconds"] = round(time.perf_counter() - t0, 4)
        return out

    def analyze_listing(self, photos: list[tuple[str | None, bytes]], *, explain: bool = False,
                        k: int | None = None, review_weak: bool = False, lots: bool = False) -> dict:
        """A listing's photos (file name or None, bytes) analysed together, and the listing's
        verdict by the rule of ``screen``'s listings.csv (``listing_rollup``, one place for it):
        to review when any photo is flagged or matches a registered object. A photo that cannot
        be used gets its ``error`` and the others are still analysed; ``index`` is its position."""
        import pandas as pd

        from ..screen import listing_rollup

        t0 = time.perf_counter()
        entries, rows = [], []
        for i, (name, data) in enumerate(photos):
            result, error = None, None
            if not data:
                error = "empty file"
            elif sniff(data) is None:
                error = f"not an image: its content is {describe_content(data)}"
            else:
                try:
                    result = self.analyze(data, explain=explain, k=k, lots=lots)
                except ImageLoadError as exc:
                    error = exc.reason
            entries.append({"index": i, "filename": name, "result": result, "error": error})
            ivory = (result or {}).get("ivory") or {}
            reg = (result or {}).get("register") or {}
            best = reg["matches"][0] if reg.get("matches") else {}
            rows.append({"row": i, "listing_id": "listing", "image": i, "error": error,
                         "flagged": ivory["decision"] == "flag" if ivory.get("decision") else None,
                         "matched": None if reg.get("no_match") is None else not reg["no_match"],
                         "score": ivory.get("probability"),
                         "best_match": best.get("object_id"), "best_match_score": best.get("score"),
                         "best_match_status": best.get("status"),
                         "quality_warnings": warnings_text(result["image"]["quality"]) if result else None})
        r = listing_rollup(pd.DataFrame(rows), review_weak=review_weak).iloc[0]

        def value(key, cast):
            return None if pd.isna(r[key]) else cast(r[key])

        return {"review": bool(r["review"]), "status": str(r["status"]), "photos": int(r["photos"]), "unreadable": int(r["unreadable"]),
                "flagged_photos": int(r["flagged_photos"]), "matched_photos": int(r["matched_photos"]),
                "weak_photos": int(r["weak_photos"]),
                "max_probability": value("max_score", float), "max_probability_photo": value("max_score_image", int),
                "best_match": value("best_match", str), "best_match_score": value("best_match_score", float),
                "best_match_photo": value("best_match_image", int), "results": entries,
                "seconds": round(time.perf_counter() - t0, 4)}

    # -- register writes (the caller checks the token) -----------------------------------------
    def register_add(self, object_id: str, uploads: list[tuple[bytes, str]], metadata: dict) -> dict:
        """Register uploaded photos ``(bytes, kind)`` of one object: each is stored in the register's
        ``photos/`` under its SHA-256 (``sha.kind``; one file for a photo uploaded twice) and then
        registered. When registering fails, the files this call stored are removed again: no photo is
        left in ``photos/`` that the register does not hold. (Under the lock, so that no other request
        relies on a file this one wrote until it is registered.) ``shares_photos_with``: the other objects
        holding a photo this one holds (``Register.shared_photos``)."""
        from ..files import write_bytes_atomic
        from ..index.register import object_key

        if self.register is None:
            raise LookupError("no register is loaded")
        folder = Path(self.settings.register) / "photos"
        with self.lock:
            paths, written = [], []
            try:
                for data, kind in uploads:
                    path = folder / f"{hashlib.sha256(data).hexdigest()}.{kind}"
                    if not path.exists():  # (write_bytes_atomic makes the folder)
                        write_bytes_atomic(path, data)
                        written.append(path)
                    paths.append(str(path))
                added, errors, already = self.register.add(object_id, paths, **metadata)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            shared = self.register.shared_photos([object_id])
            others = sorted({o for objects in shared.values() for o in objects} - {object_key(object_id)})
            return {"object_id": object_id, "photos_added": added, "already_registered": already, "errors": errors,
                    "object": self.register.get(object_id), "shares_photos_with": others}

    def register_remove(self, object_id: str) -> int:
        if self.register is None:
            raise LookupError("no register is loaded")
        with self.lock:
            return self.register.remove(object_id)

    def register_get(self, object_id: str) -> dict | None:
        if self.register is None:
            raise LookupError("no register is loaded")
        with self.lock:
            return self.register.get(object_id)

    def register_history(self, object_id: str) -> list[dict]:
        if self.register is None:
            raise LookupError("no register is loaded")
        with self.lock:
            return self.register.history(object_id)

