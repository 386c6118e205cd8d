"""The database: connections bound to Wearline's schema, migrations, and storage-mode housekeeping."""

from wearline.db._connect import DatabaseUnavailable, connect, connection_kwargs, open_pool
from wearline.db._migrate import StorageMode, applied_versions, available_migrations, migrate, storage_mode
from wearline.db._partitions import ensure_partitions, maintain_storage

__all__ = [
    "DatabaseUnavailable",
    "StorageMode",
    "applied_versions",
    "available_migrations",
    "connect",
    "connection_kwargs",
    "ensure_partitions",
    "maintain_storage",
    "migrate",
    "open_pool",
    "storage_mode",
]
