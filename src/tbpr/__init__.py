"""tbpr: text-based person retrieval."""

__version__ = "0.1.0"
