"""The one error base every stage's expected failures derive from.

An expected failure is an ordinary mistake (a bad setting, a missing file, a schema that was never migrated) or an
unreachable service (broker, database, a taken port). Its message is the whole story: the ``wearline`` command prints
``error: <message>`` on one line and exits 2, with no traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["WearlineError"]


class WearlineError(Exception):
    """An expected failure whose message names the problem and, where there is one, the fix."""
