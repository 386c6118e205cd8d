"""The database: connections bound to Wearline's schema, migrations, and storage-mode housekeeping."""

from wearline.db._connect import DatabaseUnavailable, connect, connection_kwargs, open_pool
from wearline.db._migrate import (
    NotMigrated,
    StorageMode,
    applied_versions,
    available_migrations,
    check_migrated,
    migrate,
    require_migrated,
    storage_mode,
)
from wearline.db._partitions import Maintained, StorageJob, ensure_partitions, maintain_storage, storage_jobs
from wearline.db._roles import GRANTS, ROLES, apply_roles
from wearline.db._storage import StorageError, choose_storage, probe_timescaledb
from wearline.db._wait import wait_for_database

__all__ = [
    "GRANTS",
    "ROLES",
    "DatabaseUnavailable",
    "Maintained",
    "NotMigrated",
    "StorageError",
    "StorageJob",
    "StorageMode",
    "applied_versions",
    "apply_roles",
    "available_migrations",
    "check_migrated",
    "choose_storage",
    "connect",
    "connection_kwargs",
    "ensure_partitions",
    "maintain_storage",
    "migrate",
    "open_pool",
    "probe_timescaledb",
    "require_migrated",
    "storage_jobs",
    "storage_mode",
    "wait_for_database",
]
