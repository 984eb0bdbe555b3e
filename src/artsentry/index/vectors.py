"""Nearest-neighbour search over L2-normalised vectors, with FAISS behind a tiny surface.

``VectorIndex(dim)``: ``add(ids, vectors)``, ``remove(ids)``, ``search(queries, k)
-> (scores, ids)`` with cosine similarity scores (inner products of unit
vectors), ``len()``, ``save(path)`` / ``VectorIndex.load(path)``.

Index choice is hidden: ``exact`` (a flat inner-product index: exact, fine up
to ~100k vectors) or ``ivf`` (an inverted file over k-means cells, searching
``nprobe`` cells: approximate, for large registers). ``auto`` picks exact below
``IVF_THRESHOLD`` vectors. Both support removing ids in place. Files are FAISS's
own binary format (no pickle).
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import numpy as np

from ..errors import ArtsentryError
from ..files import atomic_path

IVF_THRESHOLD = 200_000


class IndexFileError(ArtsentryError, RuntimeError):
    """An index file is missing, truncated or not a FAISS index."""


def _faiss():
    import faiss

    return faiss


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: 4 x sqrt(n) (FAISS's guideline is 4-16 x sqrt(n)), at least 16, and no
    more than there are vectors to train them on (k-means cannot make more cells than points)."""
    return max(1, min(n, max(16, int(4 * math.sqrt(n)))))


def kind_for(n: int) -> str:
    """The index ``auto`` picks for ``n`` vectors: exact below ``IVF_THRESHOLD``, else ivf."""
    return "ivf" if n >= IVF_THRESHOLD else "exact"


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError("vectors must be a 2-D array (n, dim)")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("cannot normalise a zero vector")
    return v / norms


class VectorIndex:
    def __init__(self, dim: int, kind: str = "exact", *, nlist: int | None = None, nprobe: int = 32,
                 _index=None):
        if kind not in ("exact", "ivf"):
            raise ValueError("kind must be 'exact' or 'ivf'")
        faiss = _faiss()
        self.dim = int(dim)
        self.kind = kind
        self.nprobe = nprobe
        if _index is not None:
            self._index = _index
        elif kind == "exact":
            self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        else:
            self._nlist = nlist
            self._index = None  # built on first add, when there is data to train the cells on

    @classmethod
    def for_size(cls, dim: int, expected: int, kind: str = "auto", **kw) -> "VectorIndex":
        return cls(dim, kind_for(expected) if kind == "auto" else kind, **kw)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def _build_ivf(self, sample: np.ndarray) -> None:
        faiss = _faiss()
        nlist = self._nlist or default_nlist(len(sample))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train = sample if len(sample) <= 64 * nlist else sample[np.random.default_rng(0).choice(len(sample),
                                                                                                 64 * nlist, False)]
        index.train(train)
        self._index = index

    def add(self, ids, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        v = normalise(vectors)
        if v.shape != (len(ids), self.dim):
            raise ValueError(f"expected {len(ids)} vectors of dim {self.dim}, got {v.shape}")
        if self._index is None:
            self._build_ivf(v)
        self._index.add_with_ids(v, ids)

    def remove(self, ids) -> int:
        if self._index is None or not len(ids):
            return 0
        faiss = _faiss()
        return int(self._index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query; missing neighbours have id -1 and score -inf."""
        q = normalise(queries)
        n = len(q)
        if len(self) == 0:
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        if self.kind == "ivf":
            _faiss().extract_index_ivf(self._index).nprobe = self.nprobe
        scores, ids = self._index.search(q, k)
        scores[ids < 0] = -np.inf
        return scores, ids

    def save(self, path: str | Path) -> None:
        faiss = _faiss()
        if self._index is None:
            raise ValueError("nothing to save: the index is empty")
        with atomic_path(path) as tmp:
            try:
                faiss.write_index(self._index, str(tmp))
            except RuntimeError as exc:  # FAISS's write errors are no OSError: a full disk gave a traceback
                said = str(exc)
                code = next((c for c in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)
                             if f"({os.strerror(c)})" in said), None)
                if code is None:
                    raise IndexFileError(f"{path}: the index could not be written ({said.splitlines()[0][:200]})") \
                        from None
                raise OSError(code, os.strerror(code), str(path)) from None

    @classmethod
    def load(cls, path: str | Path, nprobe: int = 32) -> "VectorIndex":
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"{path}: index file missing")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFileError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0][:200]})") from None
        kind = "ivf" if "IVF" in type(index).__name__ or hasattr(index, "nprobe") else "exact"
        return cls(index.d, kind, nprobe=nprobe, _index=index)
