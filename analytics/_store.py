"""Model files: the model in skops' format plus a JSON sidecar with its version and training metadata.

Loading a model never runs code from it. skops stores an object's state, not instructions to rebuild it, and
refuses to build a type it is not told to trust; Wearline trusts its own classes and those of scikit-learn, numpy
and scipy, and nothing else, so a model table or file written by someone else can at worst hold wrong numbers.
Format 1 (before this) was a pickle, which runs whatever its author put in it: such a file or registered blob is
refused; `wearline models convert` turns a pickle its owner trusts into format 2.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import skops.io as sio

from analytics._base import ModelError

__all__ = ["convert_pickle", "deserialize", "load_model", "save_model", "serialize", "sidecar"]

FORMAT = 2
# Types a model may be built from, by module; anything else (os.system, builtins.eval, a stranger's class) is
# refused before a single object is made.
_TRUSTED_MODULES = ("analytics.", "sklearn.", "numpy.", "scipy.")


def serialize(model: object) -> bytes:
    return bytes(sio.dumps(model, compression=zipfile.ZIP_DEFLATED))


def deserialize(blob: bytes, where: str) -> Any:
    """The model in ``blob`` (skops), or :class:`ModelError` naming what is wrong; never runs code from it."""
    if not blob.startswith(b"PK"):
        raise ModelError(
            f"{where} is not a Wearline model of format {FORMAT} (skops): a pickle (format 1) can run code when "
            "loaded and is refused; fit the model again, or convert a file you trust with "
            "`wearline models convert FILE --trust-pickle`"
        )
    try:
        untrusted = sio.get_untrusted_types(data=blob)
    except Exception as exc:  # any damage to the archive is the same answer for the user
        raise ModelError(f"{where}: not a readable model ({type(exc).__name__}: {exc})") from exc
    refused = sorted(t for t in untrusted if not t.startswith(_TRUSTED_MODULES))
    if refused:
        raise ModelError(
            f"{where}: refused, it would build types a Wearline model never holds: {', '.join(refused)} "
            "(tampered with, or not written by Wearline)"
        )
    try:
        return sio.loads(blob, trusted=untrusted)
    except Exception as exc:
        raise ModelError(f"{where}: cannot be loaded ({type(exc).__name__}: {exc})") from exc


def sidecar(path: Path) -> Path:
    """Where the metadata of the model at ``path`` lives."""
    return path.with_name(path.name + ".json")


def save_model(model: object, path: Path, kind: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``model`` and its sidecar; returns the sidecar's content (with ``version``)."""
    blob = serialize(model)
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
    """Load a model written by :func:`save_model`, checking its kind, that file and sidecar belong together, and
    that it builds only trusted types."""
    blob, meta = _read(path)
    if meta.get("kind") != kind:
        raise ModelError(f"{path} is a {meta.get('kind')!r} model, not {kind!r}")
    return deserialize(blob, f"model {path}"), meta


def _read(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        blob = path.read_bytes()
        meta = json.loads(sidecar(path).read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"model {path}: {exc.filename} not found (a model is the file plus its .json)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model {path}: cannot read it or its sidecar: {exc}") from exc
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ModelError(f"{path} does not match its sidecar {sidecar(path)} (file changed or mixed up)")
    return blob, meta


def convert_pickle(path: Path) -> dict[str, Any]:
    """Rewrite a format-1 model (a pickle) in format 2, keeping its version and metadata. Unpickling runs the
    file's code: only for files whose origin the caller vouches for."""
    blob, meta = _read(path)
    if blob.startswith(b"PK"):
        raise ModelError(f"{path} is already in format {FORMAT}")
    try:
        model = pickle.loads(blob)  # noqa: S301 - the owner vouched for this file (--trust-pickle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ModelError(f"{path}: cannot unpickle the model ({exc})") from exc
    new = serialize(model)
    meta = {**meta, "format": FORMAT, "sha256": hashlib.sha256(new).hexdigest(), "converted_from_pickle": True}
    path.write_bytes(new)
    sidecar(path).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return meta
