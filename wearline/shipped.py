"""Files of the repository's ``deploy/`` folder that commands need at run time (the broker configuration the
benchmarks start Mosquitto with, example scenarios and rules): in a wheel they are package data under
``wearline/_deploy/``, in a checkout they are read where they are."""

from __future__ import annotations

from pathlib import Path

__all__ = ["shipped"]

_HERE = Path(__file__).resolve().parent


def shipped(relative: str) -> Path:
    """``deploy/<relative>``, from the installed package or the checkout."""
    packaged = _HERE / "_deploy" / relative
    return packaged if packaged.exists() else _HERE.parent / "deploy" / relative
