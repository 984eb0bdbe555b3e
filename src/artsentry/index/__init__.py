"""Known-object search: embeddings, a FAISS vector index, and the register of objects."""

from .embedder import Embedder
from .register import Match, Register, RegisterError, SearchResult
from .vectors import VectorIndex

__all__ = ["Embedder", "Match", "Register", "RegisterError", "SearchResult", "VectorIndex"]
