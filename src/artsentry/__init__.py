"""artsentry: image recognition against the illicit trade in cultural objects and wildlife products."""

__version__ = "0.1.0"
