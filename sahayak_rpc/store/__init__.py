"""Persistence: one repository per aggregate over a database, SQLite or PostgreSQL.

Nothing outside this package writes SQL or imports a database driver.
``open_database`` (store/database.py) picks the backend from the database
setting; every repository works unchanged on either (store/sql.py).
"""

from .database import Coordinator, Database, StoreError, is_postgres_url, open_database
from .events import EventRepository, ReplicaRepository, ScheduleRepository
from .models import ModelRecord, ModelRepository
from .outcomes import OutcomeRepository
from .predictions import PredictionRepository, SecretRepository
from .runs import RunRepository
from .versions import VersionRepository

__all__ = [
    "Coordinator",
    "Database",
    "EventRepository",
    "ModelRecord",
    "ModelRepository",
    "OutcomeRepository",
    "PredictionRepository",
    "ReplicaRepository",
    "RunRepository",
    "ScheduleRepository",
    "SecretRepository",
    "StoreError",
    "VersionRepository",
    "is_postgres_url",
    "open_database",
]
