"""SQLite persistence: migrations and one repository per aggregate.

Nothing outside this package writes SQL. SQLite specifics stay here, behind
the repository classes, so another backend can satisfy the same methods.
"""

from .db import Database, StoreError
from .models import ModelRecord, ModelRepository
from .outcomes import OutcomeRepository
from .predictions import PredictionRepository, SecretRepository
from .runs import RunRepository
from .versions import VersionRepository

__all__ = [
    "Database", "ModelRecord", "ModelRepository", "OutcomeRepository", "PredictionRepository", "RunRepository",
    "SecretRepository", "StoreError", "VersionRepository",
]
