"""Wearline's shared core: settings, the wire contract, the database schema and the ``wearline`` CLI."""

__version__ = "0.1.0"
__all__ = ["__version__"]
