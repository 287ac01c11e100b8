"""The model registry: versions, aliases, the serving cache, export and import."""

from __future__ import annotations

import builtins
import hashlib
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import artifact as art
from .. import metrics as mt
from ..errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ..schema import FieldError, Row
from ..scoring import ScoringModel
from ..store import ModelRecord, SecretRepository, VersionRepository
from ..versions import ALIAS_RE, ARCHIVED, CHAMPION, IMPORT, READY, REJECTED, AliasEvent, VersionRecord
from .context import AppContext

_ALIAS = re.compile(ALIAS_RE)
_LOADED_MAX = 32
# Another replica may take the version number this one reads as next; it then reads again.
_REGISTER_ATTEMPTS = 8


@dataclass(frozen=True)
class EvaluationRows:
    """The labelled rows EvaluateModelVersion and CompareModelVersions evaluate on: ``rows`` given in the
    request (each its features, label, the problems its conversion found, and its field's path), a
    ``window`` of stored outcomes (start, end, last n), or, neither, the current validation split."""

    rows: list[tuple[Row, bool, list[FieldError], str]] | None = None
    window: tuple[int | None, int | None, int] | None = None


@dataclass(frozen=True)
class Served:
    """What answers a request: a version number and its loaded model."""

    version: int
    model: ScoringModel


def _json_safe(value: Any) -> Any:
    """NaN (an undefined metric) becomes null: artifacts hold finite numbers only."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def schema_matches(a: Any, b: Any) -> bool:
    """Whether two schemas declare equal features, in the same order."""
    return bool(a.features == b.features)


class Registry:
    """The model registry: versions and aliases in the store, the loaded champions that serve requests,
    a bounded cache of other loaded versions, and export and import of signed artifacts."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self.versions = VersionRepository(ctx.db)
        secrets = SecretRepository(ctx.db)
        self.key = secrets.get_or_create("artifact_hmac_key", lambda: os.urandom(32))
        self.key_id = hashlib.sha256(self.key).hexdigest()[:16]
        # Swapped whole on promotion: a reader sees the old or the new model, never half of one.
        self._champions: dict[int, Served] = {}
        self._loaded: OrderedDict[tuple[int, int], ScoringModel] = OrderedDict()
        self._lock = threading.Lock()
        self._register_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._changed = threading.Condition()
        self._generation: dict[int, int] = {}

    # --- serving ----------------------------------------------------------

    def refresh_all(self, models: list[ModelRecord]) -> None:
        """Serve every model's champion as the database has it now (at start, and after a reconnect)."""
        for m in models:
            self.refresh(m)

    def refresh(self, model: ModelRecord) -> Served | None:
        """Serve the champion the database names now: after this replica moved it, and when the change
        feed says another did. Reads and swaps under one lock, so concurrent refreshes end with the
        latest committed champion, never an older one. The artifact loads before the swap: a version
        that fails to load leaves the current one serving (and raises)."""
        with self._refresh_lock:
            version = self.versions.aliases_of(model.id).get(CHAMPION, 0)
            current = self._champions.get(model.id)
            if (current.version if current else 0) == version:
                return current
            self._swap(model, Served(version, self._load(model, version)) if version else None)
            return self._champions.get(model.id)

    def evict(self, model: ModelRecord, version: int) -> None:
        """Drop a version from the loaded cache (it was archived)."""
        with self._lock:
            self._loaded.pop((model.id, version), None)

    def _load(self, model: ModelRecord, version: int) -> ScoringModel:
        key = (model.id, version)
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
                return cached
        data = self.versions.artifact(model.id, version)
        if data is None:
            raise NotFound(f"model {model.name!r} has no version {version}", reason="VERSION_NOT_FOUND")
        loaded, _ = art.load(data, keys={self.key_id: self.key})
        with self._lock:
            self._loaded[key] = loaded
            while len(self._loaded) > _LOADED_MAX:
                self._loaded.popitem(last=False)
        return loaded

    def champion(self, model: ModelRecord) -> Served | None:
        """The model's champion as this replica serves it, or None when it has none."""
        return self._champions.get(model.id)

    def served(self, model: ModelRecord, version: int = 0, alias: str = "") -> Served:
        """The version a request names (by number or alias; default the champion), loaded."""
        if version and alias:
            raise InvalidArgument.fields([FieldError("alias", "give a version or an alias, not both")])
        if not version and (not alias or alias == CHAMPION):
            served = self._champions.get(model.id)
            if served is None:
                raise FailedPrecondition(
                    f"model {model.name!r} has no champion yet: train it or set the alias", reason="NO_CHAMPION"
                )
            return served
        record = self.get(model, version, alias)
        if record.status == ARCHIVED:
            raise FailedPrecondition(f"version {record.version} is archived", reason="VERSION_ARCHIVED")
        return Served(record.version, self._load(model, record.version))

    # --- versions ---------------------------------------------------------

    def get(self, model: ModelRecord, version: int = 0, alias: str = "") -> VersionRecord:
        """The record of the version a request names (by number or alias; default the champion). Raises
        InvalidArgument when given both, NotFound (ALIAS_NOT_FOUND, VERSION_NOT_FOUND)."""
        if version and alias:
            raise InvalidArgument.fields([FieldError("alias", "give a version or an alias, not both")])
        if not version:
            name = alias or CHAMPION
            version = self.versions.aliases_of(model.id).get(name, 0)
            if not version:
                raise NotFound(f"model {model.name!r} has no alias {name!r}", reason="ALIAS_NOT_FOUND")
        record = self.versions.get(model.id, version)
        if record is None:
            raise NotFound(f"model {model.name!r} has no version {version}", reason="VERSION_NOT_FOUND")
        return record

    def register(
        self,
        model: ModelRecord,
        scoring: ScoringModel,
        *,
        status: str,
        source: str,
        run_id: str = "",
        parent_version: int = 0,
        metrics: dict[str, Any],
        gate: dict[str, Any],
        weights: list[tuple[str, float]],
        lineage: dict[str, Any],
        description: str = "",
        promote: bool = False,
        reason: str = "",
        on_commit: Any = None,
        profile: dict[str, Any] | None = None,
    ) -> VersionRecord:
        """Store a new version (and, if ``promote``, make it champion) in one transaction."""
        now = self._ctx.now_us()
        # The artifact (which names its version) is made outside the write transaction: it can take a
        # while for big trees. The number is unique by constraint: when another replica took it first,
        # nothing was written, and the next number is tried (as MLflow does).
        with self._register_lock:
            for _ in range(_REGISTER_ATTEMPTS):
                version = self.versions.next_version(model.id)
                data = art.dump(
                    scoring,
                    model_name=model.name,
                    version=version,
                    created_at_us=now,
                    metadata=_json_safe({"metrics": metrics, "lineage": lineage, "source": source}),
                    key=self.key,
                    key_id=self.key_id,
                )
                sha = hashlib.sha256(data).hexdigest()
                record = self._insert(
                    model,
                    scoring,
                    version,
                    data,
                    sha,
                    now,
                    status=status,
                    source=source,
                    run_id=run_id,
                    parent_version=parent_version,
                    metrics=metrics,
                    gate=gate,
                    weights=weights,
                    lineage=lineage,
                    description=description,
                    promote=promote,
                    reason=reason,
                    on_commit=on_commit,
                    profile=profile or {},
                )
                if record is not None:
                    return record
        raise Unavailable(
            f"could not number a new version of {model.name!r}: other registrations kept taking the next number; retry",
            reason="VERSION_CONFLICT",
        )

    def _insert(
        self,
        model: ModelRecord,
        scoring: ScoringModel,
        version: int,
        data: bytes,
        sha: str,
        now: int,
        *,
        status: str,
        source: str,
        run_id: str,
        parent_version: int,
        metrics: dict[str, Any],
        gate: dict[str, Any],
        weights: list[tuple[str, float]],
        lineage: dict[str, Any],
        description: str,
        promote: bool,
        reason: str,
        on_commit: Any,
        profile: dict[str, Any],
    ) -> VersionRecord | None:
        """Store the version (None: its number was taken meanwhile, nothing written)."""
        with self._ctx.db.write() as conn:
            record = VersionRecord(
                model_id=model.id,
                version=version,
                family=scoring.family,
                status=status,
                source=source,
                training_run_id=run_id,
                parent_version=parent_version,
                metrics=metrics,
                gate=gate,
                weights=weights,
                lineage={**lineage, "artifact_sha256": sha},
                calibration=scoring.calibrator.method,
                threshold=scoring.threshold,
                artifact_sha256=sha,
                artifact_size=len(data),
                description=description,
                created_us=now,
            )
            if not self.versions.insert(conn, record, data, _json_safe(profile)):
                return None
            if promote:
                self.versions.move_alias(conn, model.id, CHAMPION, version, reason, now)
            if on_commit is not None:
                on_commit(conn, version)
        with self._lock:
            self._loaded[(model.id, version)] = scoring
            while len(self._loaded) > _LOADED_MAX:  # every run registers a version: keep the cache bounded
                self._loaded.popitem(last=False)
        if promote:
            self.refresh(model)
        return self.versions.get(model.id, version) or record

    def _swap(self, model: ModelRecord, served: Served | None) -> None:
        if served is None:
            self._champions.pop(model.id, None)
        else:
            self._champions[model.id] = served
        with self._changed:
            self._generation[model.id] = self._generation.get(model.id, 0) + 1
            self._changed.notify_all()

    def list(
        self, model: ModelRecord, page_size: int, before: int, include_archived: bool
    ) -> tuple[list[VersionRecord], int]:
        """One page of the model's versions, newest first, before version ``before`` (0: from the newest):
        the records and the version to page on from (0 on the last page). ``page_size`` 0 means 50, at most 500."""
        size = min(page_size or 50, 500)
        records = self.versions.list(model.id, before or 2**62, size + 1, include_archived)
        more = len(records) > size
        records = records[:size]
        return records, (records[-1].version if more else 0)

    # --- aliases ----------------------------------------------------------

    def set_alias(self, model: ModelRecord, alias: str, version: int, reason: str, force: bool = False) -> AliasEvent:
        """Point ``alias`` at ``version`` in one transaction, and serve it when the alias is the champion;
        returns the alias event. Raises InvalidArgument (a bad alias or no version), NotFound
        (VERSION_NOT_FOUND), or FailedPrecondition: VERSION_ARCHIVED, or VERSION_REJECTED for a champion that
        failed its gate without ``force``."""
        if not _ALIAS.fullmatch(alias):
            raise InvalidArgument.fields([FieldError("alias", f"{alias!r} must match {ALIAS_RE}")])
        if version <= 0:
            raise InvalidArgument.fields([FieldError("version", "required: a version number")])
        with self._ctx.db.write() as conn:
            status = self.versions.status_of(conn, model.id, version)
            if status is None:
                raise NotFound(f"model {model.name!r} has no version {version}", reason="VERSION_NOT_FOUND")
            if status == ARCHIVED:
                raise FailedPrecondition(f"version {version} is archived", reason="VERSION_ARCHIVED")
            if alias == CHAMPION and status == REJECTED and not force:
                raise FailedPrecondition(
                    f"version {version} failed its quality gate; set force to make it champion anyway",
                    reason="VERSION_REJECTED",
                )
            if alias == CHAMPION:
                self._load(model, version)  # only a version that loads may serve
            event = self.versions.move_alias(
                conn, model.id, alias, version, reason or "set by request", self._ctx.now_us()
            )
        if alias == CHAMPION:
            self.refresh(model)
        return event

    def delete_alias(self, model: ModelRecord, alias: str, reason: str) -> AliasEvent:
        """Delete an alias, committed with its event; returns the event. Raises FailedPrecondition
        (CHAMPION_REQUIRED) for the champion, NotFound (ALIAS_NOT_FOUND) when the model has no such alias."""
        if alias == CHAMPION:
            raise FailedPrecondition(
                "the champion alias serves predictions; point it elsewhere or roll back instead",
                reason="CHAMPION_REQUIRED",
            )
        with self._ctx.db.write() as conn:
            if alias not in self.versions.aliases_of(model.id, conn):
                raise NotFound(f"model {model.name!r} has no alias {alias!r}", reason="ALIAS_NOT_FOUND")
            return self.versions.move_alias(
                conn, model.id, alias, 0, reason or "deleted by request", self._ctx.now_us()
            )

    def history(
        self, model: ModelRecord, alias: str, page_size: int, before: int
    ) -> tuple[builtins.list[AliasEvent], int]:
        """One page of alias events (of one alias; "": all), newest first, before event id ``before`` (0: from
        the newest): the events and the id to page on from (0 on the last page). ``page_size`` 0 means 50,
        at most 500."""
        size = min(page_size or 50, 500)
        events = self.versions.history(model.id, alias, before or 2**62, size + 1)
        more = len(events) > size
        events = events[:size]
        return events, (events[-1].event_id if more else 0)

    def rollback(self, model: ModelRecord, reason: str) -> AliasEvent:
        """The champion goes back to the version that held it before the current one."""
        with self._ctx.db.write() as conn:
            last = self.versions.last_event(conn, model.id, CHAMPION)
            if last is None or not last.version:
                raise FailedPrecondition(f"model {model.name!r} has no champion to roll back", reason="NO_CHAMPION")
            target = last.previous_version
            if not target:
                raise FailedPrecondition(
                    "the champion has no predecessor to roll back to", reason="NO_PREVIOUS_CHAMPION"
                )
            if self.versions.status_of(conn, model.id, target) == ARCHIVED:
                raise FailedPrecondition(
                    f"the previous champion, version {target}, is archived", reason="VERSION_ARCHIVED"
                )
            self._load(model, target)  # only a version that loads may serve
            event = self.versions.move_alias(
                conn, model.id, CHAMPION, target, reason or f"rollback from version {last.version}", self._ctx.now_us()
            )
        self.refresh(model)
        return event

    def archive(self, model: ModelRecord, version: int) -> VersionRecord:
        """Archive a version (it then serves nothing and leaves the loaded cache); returns it as stored now.
        Raises NotFound, or FailedPrecondition when an alias points at it (VERSION_IS_CHAMPION,
        VERSION_HAS_ALIASES)."""
        record = self.get(model, version)
        if CHAMPION in record.aliases:
            raise FailedPrecondition(
                f"version {version} is the champion; it cannot be archived", reason="VERSION_IS_CHAMPION"
            )
        self.versions.set_status(model.id, version, ARCHIVED, self._ctx.now_us())
        self.evict(model, version)
        return self.get(model, version)

    # --- export / import --------------------------------------------------

    def export(self, model: ModelRecord, version: int, alias: str) -> tuple[bytes, VersionRecord]:
        """The signed artifact of the version a request names (by number or alias; default the champion),
        and its record. Raises InvalidArgument or NotFound as ``get`` does."""
        record = self.get(model, version, alias)
        data = self.versions.artifact(model.id, record.version)
        assert data is not None
        return data, record

    def import_(self, model: ModelRecord, data: bytes, description: str) -> VersionRecord:
        """Register an exported artifact (signed with this database's key) as a new ready version, not
        promoted; returns its record. Raises InvalidArgument: BAD_ARTIFACT (unreadable, over the message limit,
        or not signed with our key) or SCHEMA_MISMATCH; Unavailable (VERSION_CONFLICT) as ``register`` does."""
        try:
            scoring, info = art.load(data, keys={self.key_id: self.key}, max_bytes=self._ctx.config.max_message_bytes)
        except art.ArtifactError as exc:
            raise InvalidArgument.fields(
                [FieldError(f"artifact.{exc.field}", str(exc))], reason="BAD_ARTIFACT"
            ) from None
        if not schema_matches(scoring.schema, model.schema):
            raise InvalidArgument.fields(
                [FieldError("artifact.schema", f"the artifact's features differ from model {model.name!r}'s")],
                reason="SCHEMA_MISMATCH",
            )
        meta = info.metadata if isinstance(info.metadata, dict) else {}
        found = meta.get("metrics")
        metrics: dict[str, Any] = found if isinstance(found, dict) else {}
        lineage = {
            "imported_from": f"{info.model_name}@{info.version}",
            "imported_artifact_sha256": hashlib.sha256(data).hexdigest(),
        }
        return self.register(
            model,
            scoring,
            status=READY,
            source=IMPORT,
            metrics=metrics or {},
            gate={},
            weights=[],
            lineage=lineage,
            description=description,
        )

    # --- evaluation -------------------------------------------------------

    def evaluation_rows(self, model: ModelRecord, source: EvaluationRows) -> tuple[builtins.list[Row], np.ndarray]:
        """The labelled rows ``source`` names, and their 0/1 labels. Given rows are checked against the
        schema (INVALID_ARGUMENT naming the first 20 problems, those their conversion found among them);
        a window reads the stored outcomes; neither is the current validation split of the stored
        outcomes."""
        if source.rows is not None:
            errors: builtins.list[FieldError] = []
            rows: builtins.list[Row] = []
            labels: builtins.list[int] = []
            for features, positive, problems, prefix in source.rows:
                errors += problems + model.schema.validate_row(features, prefix=f"{prefix}.features")
                rows.append(features)
                labels.append(int(positive))
                if len(errors) > 20:
                    break
            if errors:
                raise InvalidArgument.fields(errors)
            return rows, np.asarray(labels, dtype=np.int64)
        if source.window is not None:
            start, end, last_n = source.window
            if last_n < 0:
                raise InvalidArgument.fields([FieldError("data.outcomes.last_n", "must not be negative")])
            loaded = self._ctx.outcomes.load(model.id, start_us=start, end_us=end, last_n=last_n)
            return list(loaded.rows), np.asarray(loaded.labels, dtype=np.int64)
        from ..training import split_rows
        from .training_runs import to_training_data  # it imports this module

        data = to_training_data(self._ctx.outcomes.load(model.id))
        held = data.take(split_rows(data, model.settings, model.settings.training.split))
        return held.rows, held.labels

    def evaluate(
        self, model: ModelRecord, served: Served, rows: builtins.list[dict[str, Any]], labels: np.ndarray
    ) -> mt.Metrics:
        """Metrics of ``served`` on labelled rows, at its own threshold; raises FailedPrecondition (NO_ROWS)
        when there are none."""
        if not rows:
            raise FailedPrecondition("no labelled rows to evaluate on", reason="NO_ROWS")
        probs = served.model.predict_rows(rows)
        return mt.compute(labels, probs, served.model.threshold)

    # --- watching ---------------------------------------------------------

    def watch(self, model: ModelRecord, active: Any) -> Iterator[Served | None]:
        """The champion now, then after every change, while ``active()`` is true."""
        with self._changed:
            seen = self._generation.get(model.id, 0)
        yield self._champions.get(model.id)
        while active() and not self._ctx.stopping.is_set():
            with self._changed:
                self._changed.wait_for(
                    lambda: self._generation.get(model.id, 0) != seen or self._ctx.stopping.is_set(), timeout=0.5
                )
                current = self._generation.get(model.id, 0)
            if current != seen and active():
                seen = current
                yield self._champions.get(model.id)
