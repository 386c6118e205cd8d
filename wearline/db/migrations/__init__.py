"""Versioned schema migrations, applied in order by :func:`wearline.db.migrate`.

Each module ``vNNNN_<name>.py`` holds ``COMMON`` (run in every storage mode) and optionally ``TIMESCALEDB`` and
``NATIVE`` (run after ``COMMON`` in that mode only). A migration, once released, is never edited: add a new one.
"""
