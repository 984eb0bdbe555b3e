"""``artsentry serve``: the web page and JSON API (``app.create_app``) over ``analysis.Analyzer``."""

from .analysis import Analyzer, ServeSettings
from .app import create_app

__all__ = ["Analyzer", "ServeSettings", "create_app"]
