"""ray-sbir: zero-shot sketch-based image retrieval (Doodle to Search) on Ray."""

__version__ = "0.1.0"
