"""Known-object search: embeddings, a FAISS vector index, and the register of objects.

The names are imported when first used: the register's records (``list``, ``history``, ``remove``)
need no PyTorch, which only ``Embedder`` (and the register once it embeds a photo) imports."""

from __future__ import annotations

import importlib

_HOMES = {"Embedder": ".embedder", "Match": ".register", "NotRegistered": ".register", "Register": ".register",
          "RegisterError": ".register", "RegisterReadOnly": ".register", "SearchResult": ".register",
          "VectorIndex": ".vectors"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name], __name__), name)
