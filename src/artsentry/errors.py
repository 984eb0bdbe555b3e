"""The base of every error the ``artsentry`` command reports in one line instead of a traceback.

Each module keeps its own error class (``ManifestError``, ``ArtifactError``, ...), derived from
this one as well as from the built-in it was before; the command catches this base, so it needs
none of the modules (nor PyTorch) imported to tell a user's mistake from a bug.
"""

from __future__ import annotations


class ArtsentryError(Exception):
    """A problem with the input, the data or the environment, said in one line for the user."""
