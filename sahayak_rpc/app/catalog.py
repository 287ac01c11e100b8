"""Declared models: create, look up, list, update settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .. import settings as ms
from ..errors import InvalidArgument, NotFound
from ..schema import MODEL_NAME_RE, FieldError, Schema
from ..store import ModelRecord
from .context import AppContext

MAX_PAGE = 500
DEFAULT_PAGE = 50
T = TypeVar("T")


class PerSchema(Generic[T]):
    """Something derived from a model's schema, worked out once per model (a schema never changes)."""

    def __init__(self, derive: Callable[[Schema], T]) -> None:
        self._derive = derive
        self._by_model: dict[int, T] = {}

    def __call__(self, model: ModelRecord) -> T:
        """The value for ``model``'s schema, derived on the first call for that model."""
        got = self._by_model.get(model.id)
        if got is None:
            got = self._by_model[model.id] = self._derive(model.schema)
        return got


class Catalog:
    """Declared models, cached in memory: create, look up, list, update. Reads go to the store only
    on a cache miss; ``changed`` drops what another replica may have updated."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        # Models are read on every ingest and prediction; they change rarely.
        self._cache: dict[str, ModelRecord] = {}
        self._all: list[ModelRecord] | None = None

    def create(self, name: str, description: str, schema: Schema, settings: ms.ModelSettings) -> ModelRecord:
        """Declare a model; returns its record. Raises InvalidArgument (a bad name, a description over
        4096 characters, bad settings) or AlreadyExists (MODEL_EXISTS) when the name is taken."""
        errors = []
        if not MODEL_NAME_RE.fullmatch(name):
            errors.append(FieldError("model.name", f"{name!r} must match {MODEL_NAME_RE.pattern}"))
        if len(description) > 4096:
            errors.append(FieldError("model.description", "at most 4096 characters"))
        errors += ms.check_settings(settings, prefix="model.settings")
        if errors:
            raise InvalidArgument.fields(errors)
        record = self._ctx.models.create(name, description, schema, settings, self._ctx.now_us())
        self._cache[name] = record
        self._all = None
        return record

    def get(self, name: str, field: str = "model") -> ModelRecord:
        """The model named ``name``; ``field`` names the request field in an InvalidArgument for an
        empty name. Raises NotFound (MODEL_NOT_FOUND) when there is none."""
        record = self._cache.get(name)
        if record is not None:
            return record
        if not name:
            raise InvalidArgument.fields([FieldError(field, "required")])
        record = self._ctx.models.get(name)
        if record is None:
            raise NotFound(f"model {name!r} not found", reason="MODEL_NOT_FOUND")
        self._cache[name] = record
        return record

    def by_id(self, model_id: int) -> ModelRecord:
        """The model with this id; raises NotFound (MODEL_NOT_FOUND) when there is none."""
        for record in self._cache.values():
            if record.id == model_id:
                return record
        found = self._ctx.models.get_by_id(model_id)
        if found is None:
            raise NotFound(f"model #{model_id} not found", reason="MODEL_NOT_FOUND")
        self._cache[found.name] = found
        return found

    def changed(self, name: str = "") -> None:
        """A model was created or updated (here or on another replica): read it afresh next time
        (all of them without a name)."""
        if name:
            self._cache.pop(name, None)
        else:
            self._cache.clear()
        self._all = None

    def all(self) -> list[ModelRecord]:
        """Every model, by name (cached until a model is created or updated)."""
        cached = self._all
        if cached is not None:
            return cached
        out: list[ModelRecord] = []
        after = ""
        while True:
            page, after = self.list(MAX_PAGE, after)
            out += page
            if not after:
                break
        self._all = out
        return out

    def list(self, page_size: int, after_name: str) -> tuple[list[ModelRecord], str]:
        """One page of models by name, after ``after_name``: the records and the name to resume after
        ("" on the last page). ``page_size`` 0 means 50, at most 500; raises InvalidArgument when negative."""
        if page_size < 0:
            raise InvalidArgument.fields([FieldError("page_size", "must not be negative")])
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        records = self._ctx.models.list(after_name, size + 1)
        more = len(records) > size
        records = records[:size]
        return records, (records[-1].name if more else "")

    def update(self, name: str, description: str, settings: ms.ModelSettings) -> ModelRecord:
        """Replace a model's description and settings (its schema never changes); returns the updated record.
        Raises NotFound (MODEL_NOT_FOUND) or InvalidArgument (bad settings, a description over 4096 characters)."""
        current = self.get(name, "model.name")
        errors = ms.check_settings(settings, prefix="model.settings")
        if len(description) > 4096:
            errors.append(FieldError("model.description", "at most 4096 characters"))
        if errors:
            raise InvalidArgument.fields(errors)
        self._ctx.models.update(name, description, settings, self._ctx.now_us())
        self.changed(name)
        return self.get(current.name)
