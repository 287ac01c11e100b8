"""Predictions and recommendations from the serving models, logged off the request path."""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from ..encoding import RawEncoder
from ..errors import InvalidArgument, ServiceError
from ..runtime.predlog import PredictionLog
from ..schema import (
    MISSING_REQUIRED,
    Column,
    FeatureType,
    FeatureValue,
    FieldError,
    Row,
    Schema,
    SchemaError,
    as_array,
    check_columns,
    code_problem,
    columns_to_rows,
    number_problem,
    raw_bounds,
)
from ..scoring import Contribution
from ..store import ModelRecord
from ..store.batchcodec import MatrixLayout, encode_columns, encode_matrix, encode_probabilities
from ..store.predictions import BatchRow, PredictionRow
from .catalog import Catalog, PerSchema
from .context import AppContext
from .registry import Registry, Served

MAX_BATCH_ROWS = 100_000
MAX_CANDIDATES = 10_000
DEFAULT_EXPLAIN = 3


class IdMaker:
    """Unique, cheap prediction ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        """A new id, "p" + the prefix + the counter in hex."""
        return f"p{self._prefix}{self._next():x}"


class Prediction(NamedTuple):  # a tuple: the cheapest record to build once per Predict
    """One scored row: its logged prediction id, probability, label, the version that scored it, top contributions."""

    prediction_id: str
    probability: float
    label: bool
    version: int
    contributions: list[Contribution]


@dataclass(frozen=True)
class Ranked:
    """One candidate of a recommendation, ranked by score (the probability, times its benefit when weighted)."""

    candidate_id: str
    rank: int
    probability: float
    score: float
    label: bool
    prediction_id: str
    contributions: list[Contribution]
    explained: Row | None = None  # the candidate's row as scored (subject merged in), when it was explained


def _explain_k(value: int, default: int) -> int:
    return default if value == 0 else max(0, value)


class Inference:
    """Scoring requests with the serving models (Registry.served): one row, a batch, a recommendation.
    Each checks its input first (InvalidArgument), then logs what it scored through the prediction log,
    off the request path."""

    def __init__(self, ctx: AppContext, catalog: Catalog, registry: Registry, log: PredictionLog) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._registry = registry
        self._log = log
        self.new_id = IdMaker()
        self.metrics: Any = None  # runtime.metrics.Metrics when /metrics is on
        self._plan = PerSchema(SchemaPlan)

    def _count(self, model: ModelRecord, version: int, n: int) -> None:
        if self.metrics is not None:
            self.metrics.predictions.labels(model.name, str(version)).inc(n)

    def predict(
        self,
        model: ModelRecord,
        version: int,
        alias: str,
        row: Row,
        explain_top_k: int,
        entities: dict[str, str] | None,
    ) -> Prediction:
        """Score one row with the version a request names (``version`` or ``alias``; default the champion),
        explained by its ``explain_top_k`` largest contributions (0: 3; negative: none), and log it with
        ``entities``. Raises InvalidArgument for a bad row (reported before any other error), else what
        Registry.served raises (NotFound, FailedPrecondition)."""
        try:
            served = self._registry.served(model, version, alias)
        except ServiceError:
            _require_valid_row(model.schema, row)  # a bad row is the first thing to report
            raise
        _require_valid_row(model.schema, row)
        prob, parts = served.model.explain_one(row, _explain_k(explain_top_k, DEFAULT_EXPLAIN))
        label = prob >= served.model.threshold
        pid = self.new_id()
        self._log.submit_one(pid, model.id, served.version, row, prob, label, self._ctx.now_us(), entities)
        self._count(model, served.version, 1)
        return Prediction(pid, prob, label, served.version, parts)

    def champion(self, model: ModelRecord) -> Served | None:
        """The model's champion as loaded, or None when it has none."""
        return self._registry.champion(model)

    def predict_rows(
        self, model: ModelRecord, version: int, alias: str, rows: Sequence[Row]
    ) -> tuple[str, Served, np.ndarray]:
        """Score a batch of rows (at most 100,000) with the version a request names; returns the batch id
        (row i is logged as "<batch id>:i"), the version used, and the probabilities. Raises InvalidArgument
        (naming the first 20 bad values), else what Registry.served raises."""
        if len(rows) > MAX_BATCH_ROWS:
            raise InvalidArgument.fields([FieldError("rows", f"at most {MAX_BATCH_ROWS} rows per call")])
        errors: list[FieldError] = []
        for i, row in enumerate(rows):
            errors += model.schema.validate_row(row, prefix=f"rows[{i}].features")
            if len(errors) >= 20:
                break
        if errors:
            raise InvalidArgument.fields(errors)
        served = self._registry.served(model, version, alias)
        probs = served.model.predict_rows(rows) if rows else np.zeros(0)
        batch_id = self.new_id()
        self._log_rows(model, served, batch_id, lambda: rows, probs)
        return batch_id, served, probs

    def predict_columns(
        self, model: ModelRecord, version: int, alias: str, n: int, columns: Sequence[Column]
    ) -> tuple[str, Served, np.ndarray]:
        """Score ``n`` rows given column by column (at most 100,000); returns the batch id, the version
        used, and the probabilities, and logs the batch whole. Raises InvalidArgument naming the first bad
        values, else what Registry.served raises."""
        if not 0 <= n <= MAX_BATCH_ROWS:
            raise InvalidArgument.fields([FieldError("columns.row_count", f"must be 0-{MAX_BATCH_ROWS}")])
        x = self._checked_matrix(model, n, columns, "columns", lambda i: f"row {i}")
        served = self._registry.served(model, version, alias)
        if x is None:  # checked column by column: decoded by way of its rows
            x = served.model.raw.rows(columns_to_rows(model.schema, n, columns))
        probs = served.model.score(x)
        batch_id = self.new_id()
        self._log_batch(batch_id, model, served, columns, n, probs, encoded=self._matrix_record(model, x))
        return batch_id, served, probs

    def explain_batch(
        self,
        model: ModelRecord,
        served: Served,
        rows: Sequence[Row] | None,
        n: int,
        columns: Sequence[Column],
        top_k: int,
    ) -> list[tuple[Row, list[Contribution]]]:
        """Each row of a batch scored by predict_rows (``rows``) or predict_columns (``n`` rows of
        ``columns``, checked there), with its ``top_k`` largest contributions by ``served``; nothing
        for ``top_k`` <= 0."""
        if top_k <= 0:
            return []
        if rows is None:
            rows = columns_to_rows(model.schema, n, columns)
        return list(zip(rows, served.model.explain(served.model.raw.rows(rows), top_k)[1], strict=True))

    def _checked_matrix(
        self, model: ModelRecord, n: int, columns: Sequence[Column], prefix: str, row_name: Callable[[int], str]
    ) -> np.ndarray | None:
        """Check a columnar batch. A plainly shaped one comes back as its raw-layout matrix, checked by
        MatrixCheck; anything else, or any bad value, goes column by column (check_columns), which
        names the error: None when it passes (the caller then decodes it by way of its rows)."""
        plan = self._plan(model)
        x = plan.columns_matrix(n, columns)
        if x is not None and not plan.check.errors(x, prefix):
            return x
        _require_valid_columns(model.schema, n, columns, prefix, row_name)
        return None

    def predict_matrix(
        self, model: ModelRecord, version: int, alias: str, x: np.ndarray, field: str = "features"
    ) -> tuple[str, Served, np.ndarray]:
        """Score an [n, F] matrix in the schema's raw layout (encoding.RawEncoder: schema order, a number
        as itself, a boolean as 0/1, a categorical as the index of its value in the declared categories,
        NaN for missing); checked and logged like a columnar PredictBatch. ``field`` names the matrix
        in error messages."""
        n = x.shape[0]
        if n > MAX_BATCH_ROWS:
            raise InvalidArgument.fields([FieldError(field, f"at most {MAX_BATCH_ROWS} rows per call; got {n}")])
        plan = self._plan(model)
        given, check = x, plan.check

        if x.dtype not in (np.float32, np.float64):
            x = np.asarray(x, dtype=np.float64)
        errors = check.errors(x, field)  # a bad value is the first thing to report
        if errors:
            raise InvalidArgument.fields(errors)
        served = self._registry.served(model, version, alias)
        batch_id = self.new_id()
        probs = served.model.score(x) if n else np.zeros(0)
        if n == 1:
            # Logged as one prediction (as Predict logs), under the id a batch's row 0 has: a batch
            # record of one row would cost the log's thread many times the scoring.
            prob = float(probs[0])
            self._log.submit_one(
                f"{batch_id}:0",
                model.id,
                served.version,
                plan.raw.to_row(x[0].tolist()),
                prob,
                prob >= served.model.threshold,
                self._ctx.now_us(),
                None,
            )
            self._count(model, served.version, 1)
            return batch_id, served, probs
        layout = plan.matrix_layout
        # Logged as the matrix it came in, in its precision (FP32 stays FP32), split into its number and
        # its code columns (store/batchcodec.py): a few array copies, no per-value work.
        self._log_batch(batch_id, model, served, (), n, probs, encoded=lambda: encode_matrix(given, layout))
        return batch_id, served, probs

    def _matrix_record(self, model: ModelRecord, x: np.ndarray | None) -> Callable[[], bytes] | None:
        """A checked raw-layout matrix's log record (store/batchcodec.py's split form: a category or a
        boolean in one byte, not four), to encode on the log's thread; None without a matrix."""
        if x is None:
            return None
        layout = self._plan(model).matrix_layout
        return lambda: encode_matrix(x, layout)

    def _log_batch(
        self,
        batch_id: str,
        model: ModelRecord,
        served: Served,
        columns: Sequence[Column],
        n: int,
        probs: np.ndarray,
        encoded: Callable[[], bytes] | None = None,
    ) -> None:
        """Hand a columnar batch to the log, stored whole, encoded on the log's thread (or by
        ``encoded()`` there, when the batch has a cheaper form than columns)."""
        self._count(model, served.version, n)
        now = self._ctx.now_us()
        threshold = served.model.threshold
        model_id, version = model.id, served.version

        booleans = self._plan(model).booleans

        def encode() -> BatchRow:
            # Arrays copied as they are (store/batchcodec.py): no per-value work on the log's thread.
            if encoded is not None:
                data = encoded()
            else:
                cols = [
                    c
                    if c.numbers is None or isinstance(c.numbers, np.ndarray)
                    else replace(c, numbers=as_array(c.numbers, n))
                    for c in columns
                ]
                data = encode_columns(cols, n, booleans)
            return BatchRow(batch_id, model_id, version, n, data, encode_probabilities(probs), threshold, now, "served")

        self._log.submit_batch(n, encode)

    def _log_rows(
        self, model: ModelRecord, served: Served, batch_id: str, rows: Callable[[], Sequence[Row]], probs: np.ndarray
    ) -> None:
        n = len(probs)
        if not n:
            return
        now = self._ctx.now_us()
        threshold = served.model.threshold
        model_id, version = model.id, served.version
        self._count(model, version, n)

        def expand() -> list[PredictionRow]:
            import orjson

            dumps = orjson.dumps
            return [
                (f"{batch_id}:{i}", model_id, version, dumps(row).decode(), p, int(p >= threshold), now, None, "served")
                for i, (row, p) in enumerate(zip(rows(), probs.tolist(), strict=True))
            ]

        self._log.submit_many(n, expand)

    def recommend(
        self,
        model: ModelRecord,
        version: int,
        alias: str,
        subject: Row,
        candidates: Sequence[tuple[str, Row, float]],
        top_k: int,
        weight_by_benefit: bool,
        explain_top_k: int,
        entities: dict[str, str] | None,
    ) -> tuple[str, int, list[Ranked]]:
        """Rank ``candidates`` (id, features, benefit; at most 10,000) for ``subject``, each scored on the
        subject's features merged with its own; returns the recommendation id, the version used, and the top
        ``top_k`` (0: all) by score, explained by ``explain_top_k`` contributions (0: 3; negative: none).
        Every candidate is logged, as "<recommendation id>:<candidate id>". Raises InvalidArgument, else what
        Registry.served raises."""
        if len(candidates) > MAX_CANDIDATES:
            raise InvalidArgument.fields([FieldError("candidates", f"at most {MAX_CANDIDATES} candidates")])
        if top_k < 0:
            raise InvalidArgument.fields([FieldError("top_k", "must not be negative")])
        schema = model.schema
        errors = schema.validate_row(subject, prefix="subject_features", required=False)
        seen: set[str] = set()
        for i, (cid, features, benefit) in enumerate(candidates):
            if not cid:
                errors.append(FieldError(f"candidates[{i}].candidate_id", "required"))
            elif cid in seen:
                errors.append(FieldError(f"candidates[{i}].candidate_id", f"duplicate {cid!r}"))
            seen.add(cid)
            if not math.isfinite(benefit) or benefit < 0:
                errors.append(FieldError(f"candidates[{i}].benefit", "must be a finite number >= 0"))
            errors += schema.validate_row(features, prefix=f"candidates[{i}].features", required=False)
            errors += [
                FieldError(f"candidates[{i}].features.{name}", MISSING_REQUIRED)
                for name in schema.missing_required(subject, features)
            ]
            if len(errors) >= 20:
                break
        if errors:
            raise InvalidArgument.fields(errors)
        served = self._registry.served(model, version, alias)
        k = _explain_k(explain_top_k, DEFAULT_EXPLAIN)
        x = served.model.raw.rows([{**subject, **features} for _, features, _ in candidates])
        probs = served.model.score(x)
        if weight_by_benefit:
            scores = probs * np.fromiter((c[2] for c in candidates), dtype=np.float64, count=len(candidates))
        else:
            scores = probs
        order = np.argsort(-scores, kind="stable")
        if top_k:
            order = order[:top_k]
        recommendation_id = self.new_id()
        threshold = served.model.threshold
        probs_list, scores_list = probs.tolist(), scores.tolist()
        chosen = order.tolist()
        explained = served.model.explain(x[chosen], k)[1]  # only the candidates returned
        out = [
            Ranked(
                candidates[i][0],
                rank,
                probs_list[i],
                scores_list[i],
                probs_list[i] >= threshold,
                f"{recommendation_id}:{candidates[i][0]}",
                explained[rank - 1],
                {**subject, **candidates[i][1]} if k else None,
            )
            for rank, i in enumerate(chosen, start=1)
        ]
        now = self._ctx.now_us()
        model_id, served_version = model.id, served.version
        ents = dict(entities or {})

        def expand() -> list[PredictionRow]:
            import orjson

            dumps = orjson.dumps
            return [
                (
                    f"{recommendation_id}:{cid}",
                    model_id,
                    served_version,
                    dumps({**subject, **features}).decode(),
                    p,
                    int(p >= threshold),
                    now,
                    dumps({**ents, "candidate_id": cid}).decode(),
                    "served",
                )
                for (cid, features, _), p in zip(candidates, probs_list, strict=True)
            ]

        self._log.submit_many(len(candidates), expand)
        self._count(model, served.version, len(candidates))
        return recommendation_id, served.version, out

    def recommend_columns(
        self,
        model: ModelRecord,
        version: int,
        alias: str,
        subject: Row,
        ids: Sequence[str],
        benefits: Sequence[float],
        columns: Sequence[Column],
        top_k: int,
        weight_by_benefit: bool,
        explain_top_k: int,
    ) -> tuple[str, int, list[Ranked]]:
        """Recommend with the candidates laid out column by column (the fast form)."""
        n = len(ids)
        errors: list[FieldError] = []
        if n > MAX_CANDIDATES:
            errors.append(FieldError("candidate_columns.candidate_ids", f"at most {MAX_CANDIDATES} candidates"))
        if not n:
            errors.append(FieldError("candidate_columns.candidate_ids", "required: at least one candidate"))
        if len(set(ids)) != n or not all(ids):
            errors.append(FieldError("candidate_columns.candidate_ids", "ids must be non-empty and unique"))
        if len(benefits) not in (0, n):
            errors.append(FieldError("candidate_columns.benefits", f"has {len(benefits)} entries for {n} candidates"))
        ben = np.asarray(benefits, dtype=np.float64) if len(benefits) else np.ones(n)
        if len(benefits) and not (np.isfinite(ben).all() and (ben >= 0).all()):
            errors.append(FieldError("candidate_columns.benefits", "must be finite numbers >= 0"))
        if top_k < 0:
            errors.append(FieldError("top_k", "must not be negative"))
        overlap = sorted({c.name for c in columns} & subject.keys())
        if overlap:
            errors.append(FieldError("candidate_columns.features", f"{', '.join(overlap)} given by the subject too"))
        errors += model.schema.validate_row(subject, prefix="subject_features", required=False)
        if errors:
            raise InvalidArgument.fields(errors)
        # The subject's features as constant columns: then it is one columnar batch.
        merged = list(columns) + [_constant(name, value, n) for name, value in subject.items()]
        x = self._checked_matrix(model, n, merged, "candidate_columns.features", lambda i: f"candidate {ids[i]}")
        served = self._registry.served(model, version, alias)
        scoring = served.model
        logged = x  # its log record: the matrix when it came plainly shaped, else its columns
        if x is None:  # checked column by column: decoded by way of its rows
            x = scoring.raw.rows(columns_to_rows(model.schema, n, merged))
        probs = scoring.score(x)
        scores = probs * ben if weight_by_benefit else probs
        order = np.argsort(-scores, kind="stable")
        if top_k:
            order = order[:top_k]
        k = _explain_k(explain_top_k, DEFAULT_EXPLAIN)
        recommendation_id = self.new_id()
        threshold = scoring.threshold
        chosen = order.tolist()
        explained = scoring.explain(x[chosen], k)[1]  # only the candidates returned
        to_row = self._plan(model).raw.to_row  # each explained row's values, for its contributions
        probs_list, scores_list = probs.tolist(), scores.tolist()
        out = [
            Ranked(
                ids[i],
                rank,
                probs_list[i],
                scores_list[i],
                probs_list[i] >= threshold,
                f"{recommendation_id}:{i}",
                explained[rank - 1],
                to_row(x[i].tolist()) if k else None,
            )
            for rank, i in enumerate(chosen, start=1)
        ]
        self._log_batch(recommendation_id, model, served, merged, n, probs, encoded=self._matrix_record(model, logged))
        return recommendation_id, served.version, out


class SchemaPlan:
    """What the batch paths derive from a model's schema, worked out once per model."""

    _KINDS = {FeatureType.NUMERIC: "number", FeatureType.BOOLEAN: "bool", FeatureType.CATEGORICAL: "category"}

    def __init__(self, schema: Schema) -> None:
        self.check = MatrixCheck(schema)
        self.raw = RawEncoder.from_schema(schema)
        self.booleans = frozenset(f.name for f in schema.features if f.type is FeatureType.BOOLEAN)
        # How a logged matrix names and stores its columns (schema order).
        self.matrix_layout = MatrixLayout([(f.name, self._KINDS[f.type], f.categories) for f in schema.features])
        # For columns_matrix: each feature's position, and a categorical's value -> index in its categories.
        self._positions = {
            f.name: (
                j,
                {c: float(i) for i, c in enumerate(f.categories)} if f.type is FeatureType.CATEGORICAL else None,
            )
            for j, f in enumerate(schema.features)
        }

    def columns_matrix(self, n: int, columns: Sequence[Column]) -> np.ndarray | None:
        """A columnar batch in the raw layout (as MatrixCheck and ScoringModel.score take it),
        or None when it is not plainly shaped: a column unknown, repeated, of the wrong kind or length,
        categorical strings rather than codes, codes out of range, a dictionary entry repeated or not
        among the declared categories. Those take the column-by-column path, which names the error.
        The values themselves are judged by MatrixCheck."""
        if n <= 0:
            return None
        x = np.full((n, len(self._positions)), np.nan, order="F")  # column writes are contiguous
        seen: set[str] = set()
        for c in columns:
            where = self._positions.get(c.name)
            if where is None or c.name in seen:
                return None
            seen.add(c.name)
            j, index = where
            if index is None:  # a number, or a boolean as 0 / 1 / NaN
                values = c.numbers
                if values is None or c.strings or c.codes is not None or len(values) != n:
                    return None
                x[:, j] = values
                continue
            codes, dictionary = c.codes, c.dictionary or ()
            if codes is None or c.numbers is not None or c.strings or len(codes) != n:
                return None
            lut = [index.get(word) for word in dictionary]
            if None in lut or len(set(dictionary)) != len(lut) or codes.min() < -1 or codes.max() >= len(lut):
                return None
            lut.append(math.nan)  # code -1: missing
            x[:, j] = np.array(lut)[codes]
        return x


class MatrixCheck:
    """The validator of a raw-layout matrix: the schema's rules (schema.raw_bounds) as per-column
    vectors, checked in one compiled pass (kernels.within_rules), every bad cell named."""

    def __init__(self, schema: Schema) -> None:
        feats = schema.features
        lo, hi = zip(*map(raw_bounds, feats)) if feats else ((), ())
        self.features = feats
        self.lo, self.hi = np.array(lo), np.array(hi)
        self.whole = np.array([f.type is not FeatureType.NUMERIC for f in feats])
        self.optional = np.array([not f.required for f in feats])
        self.column = {f.name: j for j, f in enumerate(feats)}

    def errors(self, x: np.ndarray, field: str, limit: int = 20) -> list[FieldError]:
        """Every cell of ``x`` (the first ``limit``) that breaks a rule, named "<field>[i, j] (<feature>)";
        the shape, when it is not [n, F]."""
        from .. import kernels

        if x.ndim != 2 or x.shape[1] != len(self.features):
            return [FieldError(field, f"needs shape [n, {len(self.features)}]; got {list(x.shape)}")]
        if kernels.within_rules(x, self.lo, self.hi, self.whole, self.optional, _NO_MASK):
            return []
        bad = np.empty(x.shape, dtype=np.bool_)
        kernels.within_rules(x, self.lo, self.hi, self.whole, self.optional, bad)
        out = []
        for i, j in np.argwhere(bad)[:limit].tolist():
            f, v = self.features[j], float(x[i, j])
            if math.isnan(v):
                reason = MISSING_REQUIRED
            else:
                reason = (number_problem(f, v) if f.type is FeatureType.NUMERIC else code_problem(f, v)) or ""
            out.append(FieldError(f"{field}[{i}, {j}] ({f.name})", reason))
        return out


_NO_MASK = np.empty((0, 0), dtype=np.bool_)  # kernels.within_rules: stop at the first broken rule


def _require_valid_row(schema: Schema, row: Row) -> None:
    errors = schema.validate_row(row)
    if errors:
        raise InvalidArgument.fields(errors)


def _require_valid_columns(
    schema: Schema, n: int, columns: Sequence[Column], prefix: str, row_name: Callable[[int], str]
) -> None:
    """INVALID_ARGUMENT naming the first bad rows (or the bad column) of a columnar batch."""
    try:
        row_errors = check_columns(schema, n, columns, prefix)
    except SchemaError as exc:
        raise InvalidArgument.fields(exc.errors) from None
    if row_errors:
        raise InvalidArgument.fields(
            [FieldError(f"{row_name(i)}: {row_errors[i].field}", row_errors[i].reason) for i in sorted(row_errors)[:20]]
        )


def _constant(name: str, value: FeatureValue, n: int) -> Column:
    """A column holding one value in every row."""
    if isinstance(value, str):
        return Column(name, codes=np.zeros(n, dtype=np.int64), dictionary=[value])
    return Column(name, numbers=np.full(n, float(value)))
