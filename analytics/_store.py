"""Model files: the pickled model plus a JSON sidecar with its version and training metadata."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics._base import ModelError

__all__ = ["load_model", "save_model", "sidecar"]

FORMAT = 1


def sidecar(path: Path) -> Path:
    """Where the metadata of the model at ``path`` lives."""
    return path.with_name(path.name + ".json")


def save_model(model: object, path: Path, kind: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` and its sidecar; returns the sidecar's content (with ``version``)."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(blob).hexdigest()
    now = datetime.now(UTC)
    meta = {
        "format": FORMAT,
        "kind": kind,
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "version": f"{now:%Y%m%dT%H%M%SZ}-{digest[:8]}",
        "created_at": now.isoformat(),
        "sha256": digest,
        **metadata,
    }
    path.write_bytes(blob)
    sidecar(path).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return meta


def load_model(path: Path, kind: str) -> tuple[Any, dict[str, Any]]:
    """Load a model written by :func:`save_model`, checking its kind and that file and sidecar belong together.

    Model files are pickles: load only files you or your own pipeline wrote.
    """
    try:
        blob = path.read_bytes()
        meta = json.loads(sidecar(path).read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"model {path}: {exc.filename} not found (a model is the file plus its .json)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model {path}: cannot read it or its sidecar: {exc}") from exc
    if meta.get("kind") != kind:
        raise ModelError(f"{path} is a {meta.get('kind')!r} model, not {kind!r}")
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ModelError(f"{path} does not match its sidecar {sidecar(path)} (file changed or mixed up)")
    try:
        model = pickle.loads(blob)  # noqa: S301 - our own file, checked against its sidecar hash
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ModelError(f"{path}: cannot unpickle the model ({exc})") from exc
    return model, meta
