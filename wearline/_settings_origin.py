"""Where each setting's value came from, so that a bad one is reported where the user wrote it.

A value can come from the caller (the CLI's flags), a ``WEARLINE_*`` environment variable or the TOML file, in that
order of precedence. A bad value from the file is named by the file's key and line, one from the environment by its
variable: the user is pointed at what they wrote, never at a variable they did not set.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

__all__ = ["ENV_PREFIX", "Origins", "env_name", "env_path", "known_keys", "suggest", "toml_key_lines"]

ENV_PREFIX = "WEARLINE_"
Path_ = tuple[str, ...]

# Variables that share the prefix but are not settings by design: the test suite's servers (WEARLINE_TEST_*), the
# ./dev script's virtualenv, and the file the settings are read from.
_NOT_SETTINGS = re.compile(r"^(TEST_.*|VENV|CONFIG)$", re.IGNORECASE)

_TABLE = re.compile(r"^\s*\[(?!\[)\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_KEY_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


def env_path(name: str) -> Path_ | None:
    """The setting a ``WEARLINE_*`` variable sets (``WEARLINE_MQTT__PORT`` -> ``("mqtt", "port")``).

    None for a variable outside the prefix or one that is not a setting by design.
    """
    if not name.upper().startswith(ENV_PREFIX):
        return None
    rest = name[len(ENV_PREFIX) :]
    if _NOT_SETTINGS.match(rest):
        return None
    return tuple(rest.lower().split("__"))


def env_name(path: Path_) -> str:
    """The environment variable for a setting (``("mqtt", "port")`` -> ``WEARLINE_MQTT__PORT``)."""
    return ENV_PREFIX + "__".join(path).upper()


def known_keys(model: type[BaseModel], parent: Path_) -> list[str]:
    """The keys a settings model accepts under ``parent`` (aliases where a field has one)."""
    current: type[BaseModel] | None = model
    for part in parent:
        if current is None:
            return []
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        ann = fields[part].annotation if part in fields else None
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if current is None:
        return []
    return [f.alias or n for n, f in current.model_fields.items()]


def _leaf_paths(model: type[BaseModel], parent: Path_ = ()) -> Iterator[Path_]:
    for key in known_keys(model, parent):
        children = known_keys(model, (*parent, key))
        if children:
            yield from _leaf_paths(model, (*parent, key))
        else:
            yield (*parent, key)


def suggest(model: type[BaseModel], path: Path_) -> list[Path_]:
    """Settings whose name is close to a misspelt ``path``: its siblings, else any setting by its full name."""
    near = difflib.get_close_matches(path[-1], known_keys(model, path[:-1]), n=2, cutoff=0.6)
    if near and len(path) > 1:
        return [(*path[:-1], n) for n in near]
    every = {env_name(p): p for p in _leaf_paths(model)}
    return [every[n] for n in difflib.get_close_matches(env_name(path), list(every), n=1, cutoff=0.75)]


def toml_key_lines(text: str) -> dict[Path_, int]:
    """The line (1-based) where each key of a TOML document is first written, by its full dotted path.

    Covers what a settings file holds: tables, dotted keys, key = value lines. A key inside an inline table or a
    multi-line value is found through its nearest enclosing key.
    """
    lines: dict[Path_, int] = {}
    table: Path_ | None = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if _ARRAY_TABLE.match(line):
            table = None  # settings have no arrays of tables; keys below it are not ours to locate
        elif m := _TABLE.match(line):
            table = _parts(m.group(1))
            lines.setdefault(table, number)
        elif table is not None and (m := _KEY.match(line)):
            lines.setdefault((*table, *_parts(m.group(1))), number)
    return lines


def _parts(dotted: str) -> Path_:
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in _KEY_PART.findall(dotted))


def _leaves(data: Mapping[str, Any], parent: Path_ = ()) -> Iterator[Path_]:
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, (*parent, str(key)))
        else:
            yield (*parent, str(key))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class Origins:
    """The leaf settings each source gave, highest precedence first: caller, environment, file."""

    model: type[BaseModel]
    given: frozenset[Path_]
    env: Mapping[Path_, str]
    file_name: str | None = None
    file: frozenset[Path_] = frozenset()
    file_lines: Mapping[Path_, int] = field(default_factory=dict)

    @classmethod
    def collect(
        cls,
        model: type[BaseModel],
        given: Mapping[str, Any],
        environ: Mapping[str, str],
        *,
        file_name: str | None = None,
        file_data: Mapping[str, Any] | None = None,
        file_text: str = "",
    ) -> Origins:
        env = {p: n for n in environ if (p := env_path(n)) is not None}
        return cls(
            model,
            frozenset(_leaves(given)),
            env,
            file_name,
            frozenset(_leaves(file_data or {})),
            toml_key_lines(file_text),
        )

    def describe(self, err: ErrorDetails) -> str:
        """One line for one validation error: the setting, where its value was written, what is wrong with it."""
        loc: Path_ = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
        name = ".".join(loc) or "(settings)"
        msg = err["msg"].removeprefix("Value error, ")
        unknown = err["type"] == "extra_forbidden"
        if unknown:
            msg = "unknown setting"
        # One value (perhaps a table, under an unknown key) rather than a section checked as a whole.
        single = unknown or not isinstance(err["input"], Mapping)
        if _covers(self.given, loc, single=single):
            return f"{name}: {msg}{self._did_you_mean(loc, unknown, env=False)}"
        if (var := self._env_var(loc, single=single)) is not None:
            return f"{name} ({var}): {msg}{self._did_you_mean(loc, unknown, env=True)}"
        if _covers(self.file, loc, single=single):
            line = self._line(loc)
            where = f"{self.file_name} line {line}" if line else f"{self.file_name}"
            value = _toml_value(err["input"])
            return f"{where}: {name} = {value}: {msg}{self._did_you_mean(loc, unknown, env=False)}"
        # A whole section failed a check across its settings: list where each of them was written.
        wrote = [self.env[p] for p in sorted(self.env) if p[: len(loc)] == loc]
        wrote += [
            f"{self.file_name} line {self._line(p)}"
            for p in sorted(self.file)
            if p[: len(loc)] == loc and not _covers(self.given, p) and self._env_var(p) is None and self._line(p)
        ]
        return f"{name} ({', '.join(dict.fromkeys(wrote))}): {msg}" if wrote else f"{name}: {msg}"

    def _env_var(self, loc: Path_, *, single: bool = False) -> str | None:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.env:
                return self.env[loc[:n]]
        below = [var for p, var in sorted(self.env.items()) if single and p[: len(loc)] == loc]
        return ", ".join(below) if below else None

    def _line(self, loc: Path_) -> int | None:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.file_lines:
                return self.file_lines[loc[:n]]
        return None

    def _did_you_mean(self, loc: Path_, unknown: bool, *, env: bool) -> str:
        if not unknown:
            return ""
        near = suggest(self.model, loc)
        if not near:
            return ""
        return "; did you mean " + " or ".join(env_name(p) if env else ".".join(p) for p in near) + "?"


def _covers(paths: frozenset[Path_], loc: Path_, *, single: bool = False) -> bool:
    """Whether a value in ``paths`` is ``loc`` itself or holds it (an inline table, a JSON section).

    With ``single``, values below ``loc`` count too: they are the parts of the one value at ``loc``.
    """
    if any(loc[:n] in paths for n in range(len(loc), 0, -1)):
        return True
    return single and any(p[: len(loc)] == loc for p in paths)
