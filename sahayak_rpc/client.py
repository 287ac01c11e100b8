"""The typed Python client: the reference client for every sahayak-rpc service.

    with Client("127.0.0.1:50051") as c:
        c.record_outcome("scheme-sahayak", {"age": 41.0, "craft": "weaver"}, label=True)

Failures raise SahayakError with the gRPC code, the message, the field
violations and the machine-readable reason the server sent.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from .schema import FeatureSpec, FeatureType, LabelSpec, Row
from ._proto.sahayak.v1 import (
    common_pb2,
    feedback_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    monitor_pb2,
    monitor_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

if TYPE_CHECKING:
    from .local import LocalScorer

__all__ = ["Client", "FieldViolation", "OutcomeInput", "SahayakError"]

T = TypeVar("T")
_TYPES = {
    FeatureType.NUMERIC: registry_pb2.FEATURE_TYPE_NUMERIC,
    FeatureType.CATEGORICAL: registry_pb2.FEATURE_TYPE_CATEGORICAL,
    FeatureType.BOOLEAN: registry_pb2.FEATURE_TYPE_BOOLEAN,
}


# Calls that are safe to send again retry UNAVAILABLE by themselves (gRPC's own retry policy, not a loop
# of ours): a replica restarting, or a database failing over, costs a client nothing but a little time.
# Reads and predictions are safe; RecordOutcome is, because this client always names the outcome.
# CANCELLED too: a server that shuts down answers the calls that reached it but no handler yet with
# CANCELLED instead of UNAVAILABLE (grpc/grpc#41785, open); gRPC retries only calls whose answer has not
# begun, and never one its own caller cancelled, so no work is done twice.
# "round_robin" spreads calls over every address the target resolves to (several replicas).
_IDEMPOTENT = {
    "sahayak.v1.InferenceService": (),
    "sahayak.v1.ModelRegistryService": (
        "GetModel",
        "ListModels",
        "ListModelVersions",
        "GetModelVersion",
        "EvaluateModelVersion",
        "CompareModelVersions",
        "ListAliasHistory",
        "ExportModelVersion",
    ),
    "sahayak.v1.TrainingService": ("RecordOutcome", "GetTrainingRun", "ListTrainingRuns"),
    "sahayak.v1.MonitorService": (
        "GetServerStatus",
        "GetPerformance",
        "GetPerformanceTrend",
        "DetectDrift",
        "ListAlerts",
        "GetMonitoringReport",
    ),
    "sahayak.v1.FeedbackService": ("GetFeedbackSummary",),
    "grpc.health.v1.Health": ("Check",),
}
SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": service, **({"method": m} if m else {})}
                    for service, methods in _IDEMPOTENT.items()
                    for m in (methods or ("",))
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ],
    }
)


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a failed request, as the server named it (google.rpc.BadRequest)."""

    field: str
    description: str


class SahayakError(Exception):
    """An RPC failed: ``code`` is the grpc.StatusCode, ``violations`` name bad fields."""

    def __init__(self, code: grpc.StatusCode, message: str, violations: list[FieldViolation], reason: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.violations = violations
        self.reason = reason

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> SahayakError:
        """The error a failed call raised, with the field violations and the reason from its status details."""
        code: grpc.StatusCode = err.code()
        message: str = err.details() or ""
        violations: list[FieldViolation] = []
        reason = ""
        status = rpc_status.from_call(err)
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
                elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
        return cls(code, message, violations, reason)


@dataclass
class OutcomeInput:
    """One labelled example to send; mirrors sahayak.v1.Outcome."""

    features: Row
    label: bool
    outcome_id: str = ""
    entities: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    occurred_at: dt.datetime | None = None
    prediction_id: str = ""


def fill_features(target: Any, row: Mapping[str, float | int | str | bool | None]) -> None:
    """Copy a Row into a proto feature map (None = leave missing)."""
    for name, value in row.items():
        if value is None:
            continue
        fv = target[name]
        if isinstance(value, bool):
            fv.bool_value = value
        elif isinstance(value, str):
            fv.string_value = value
        else:
            fv.number_value = value


def outcome_to_proto(o: OutcomeInput, target: common_pb2.Outcome | None = None) -> common_pb2.Outcome:
    msg = target if target is not None else common_pb2.Outcome()
    msg.outcome_id = o.outcome_id
    msg.label = common_pb2.LABEL_POSITIVE if o.label else common_pb2.LABEL_NEGATIVE
    fill_features(msg.features, o.features)
    if o.entities:
        msg.entities.update(o.entities)
    if o.metadata:
        msg.metadata.update(o.metadata)
    if o.occurred_at is not None:
        msg.occurred_at.FromDatetime(o.occurred_at)
    if o.prediction_id:
        msg.prediction_id = o.prediction_id
    return msg


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICRO = dt.timedelta(microseconds=1)


def _micros(when: dt.datetime | None) -> int:
    if when is None:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (when - _EPOCH) // _MICRO


def outcomes_to_columns(batch: list[OutcomeInput], target: common_pb2.OutcomeColumns) -> bool:
    """Lay a batch out column by column; False if a feature mixes strings and numbers."""
    if not feature_columns([o.features for o in batch], target.features):
        return False
    target.labels.extend([common_pb2.LABEL_POSITIVE if o.label else common_pb2.LABEL_NEGATIVE for o in batch])
    if any(o.outcome_id for o in batch):
        target.outcome_ids.extend([o.outcome_id for o in batch])
    if any(o.occurred_at is not None for o in batch):
        target.occurred_at_micros.extend([_micros(o.occurred_at) for o in batch])
    if any(o.prediction_id for o in batch):
        target.prediction_ids.extend([o.prediction_id for o in batch])
    for group, getter in (("entities", lambda o: o.entities), ("metadata", lambda o: o.metadata)):
        keys: dict[str, None] = {}
        for o in batch:
            keys.update(dict.fromkeys(getter(o)))
        for key in keys:
            getattr(target, group).add(name=key, values=[getter(o).get(key, "") for o in batch])
    return True


def feature_columns(rows: list[Mapping[str, Any]], target: common_pb2.FeatureColumns) -> bool:
    """Lay rows out column by column; False if a feature mixes strings and numbers."""
    n = len(rows)
    cols: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        for name, value in row.items():
            col = cols.get(name)
            if col is None:
                col = cols[name] = [None] * n
            col[i] = value
    target.row_count = n
    nan = float("nan")
    for name, col in cols.items():
        kinds = set(map(type, col))
        kinds.discard(type(None))
        if kinds <= {str}:
            # Dictionary-encoded: a few distinct words and one small int per row.
            index: dict[object, int] = {None: -1, "": -1}
            codes = [index.setdefault(v, len(index) - 2) for v in col]
            target.columns.add(name=name, codes=codes, dictionary=[w for w in index if w])
        elif kinds <= {float, int, bool}:
            target.columns.add(name=name, numbers=[nan if v is None else float(v) for v in col])
        else:
            return False
    return True


def feature_spec_to_proto(f: FeatureSpec) -> registry_pb2.FeatureSpec:
    spec = registry_pb2.FeatureSpec(
        name=f.name,
        type=_TYPES[f.type],
        required=f.required,
        description=f.description,
        categories=list(f.categories),
        allow_unknown_categories=f.allow_unknown_categories,
        group=f.group,
    )
    if f.min is not None:
        spec.min = f.min
    if f.max is not None:
        spec.max = f.max
    return spec


class Client:
    """A connection to a sahayak-rpc server (or several replicas): a method for each common call, and the
    generated stubs (``registry``, ``training``, ``monitor``, ``inference``, ``feedback``) for the rest.
    Every method raises SahayakError when its call fails; a call's deadline is ``timeout`` unless it says
    otherwise."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        metadata: Iterable[tuple[str, str]] = (),
        options: Iterable[tuple[str, Any]] = (),
        token: str | None = None,
        tls: bool = False,
        ca_cert: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
    ) -> None:
        """``target``: one address, a name that resolves to several, or a list of replicas
        (``ipv4:10.0.0.1:50051,10.0.0.2:50051``): calls are spread over them and idempotent ones
        retry UNAVAILABLE (``SERVICE_CONFIG``). ``token``: a bearer token (sent as ``authorization:
        Bearer``). TLS is on when ``tls`` or any certificate is given: ``ca_cert`` (PEM) verifies
        the server (default: the system roots), ``client_cert``/``client_key`` (PEM) are this
        client's for mutual TLS."""
        opts = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            # A replica that restarts is used again within a second of listening (gRPC's default
            # backoff grows to two minutes: a rolling restart would then run out of replicas).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            *options,
        ]
        if channel is None:
            if tls or ca_cert or client_cert:
                creds = grpc.ssl_channel_credentials(ca_cert, client_key, client_cert)
                channel = grpc.secure_channel(target, creds, options=opts)
            else:
                channel = grpc.insecure_channel(target, options=opts)
        self.channel = channel
        self.timeout = timeout
        self.metadata = tuple(metadata) + ((("authorization", f"Bearer {token}"),) if token else ())
        self.registry = registry_pb2_grpc.ModelRegistryServiceStub(self.channel)
        self.training = training_pb2_grpc.TrainingServiceStub(self.channel)
        self.monitor = monitor_pb2_grpc.MonitorServiceStub(self.channel)
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.feedback = feedback_pb2_grpc.FeedbackServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in progress are cancelled."""
        self.channel.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise SahayakError.from_rpc_error(err) from None

    # --- health -----------------------------------------------------------

    def health(self, service: str = "") -> str:
        """The grpc.health.v1 status name: SERVING, NOT_SERVING, ..."""
        resp = self._call(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects; raises grpc.FutureTimeoutError after ``timeout`` seconds."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # --- models -----------------------------------------------------------

    def create_model(
        self,
        name: str,
        features: Iterable[FeatureSpec],
        label: LabelSpec | None = None,
        description: str = "",
        settings: registry_pb2.ModelSettings | None = None,
    ) -> registry_pb2.Model:
        """Declare a model (a ``label`` of None takes LabelSpec's defaults); returns it as stored.
        SahayakError INVALID_ARGUMENT for a bad name, schema or settings, ALREADY_EXISTS when the name is taken."""
        lab = label or LabelSpec()
        model = registry_pb2.Model(
            name=name,
            description=description,
            features=[feature_spec_to_proto(f) for f in features],
            label=registry_pb2.LabelSpec(
                name=lab.name,
                positive_class=lab.positive_class,
                negative_class=lab.negative_class,
                description=lab.description,
            ),
        )
        if settings is not None:
            model.settings.CopyFrom(settings)
        return self._call(self.registry.CreateModel, registry_pb2.CreateModelRequest(model=model)).model

    def get_model(self, name: str) -> registry_pb2.Model:
        """The model named ``name``; SahayakError NOT_FOUND when there is none."""
        return self._call(self.registry.GetModel, registry_pb2.GetModelRequest(name=name)).model

    def list_models(self, page_size: int = 100) -> Iterator[registry_pb2.Model]:
        """Every model, by name, fetched a page of ``page_size`` at a time as the iterator advances."""
        token = ""
        while True:
            resp = self._call(
                self.registry.ListModels, registry_pb2.ListModelsRequest(page_size=page_size, page_token=token)
            )
            yield from resp.models
            token = resp.next_page_token
            if not token:
                return

    def update_model(self, model: registry_pb2.Model, paths: Iterable[str]) -> registry_pb2.Model:
        """Copy the fields ``paths`` names (an update mask: ``description``, ``settings``, or a part of it
        such as ``settings.gate``) from ``model`` to the stored model of its name; returns it as stored. SahayakError
        INVALID_ARGUMENT for no paths or one that cannot change, NOT_FOUND for an unknown model."""
        request = registry_pb2.UpdateModelRequest(model=model, update_mask=field_mask_pb2.FieldMask(paths=list(paths)))
        return self._call(self.registry.UpdateModel, request).model

    # --- outcomes ---------------------------------------------------------

    def record_outcome(
        self,
        model: str,
        features: Row,
        label: bool,
        *,
        outcome_id: str = "",
        entities: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        occurred_at: dt.datetime | None = None,
        prediction_id: str = "",
    ) -> training_pb2.RecordOutcomeResponse:
        """Store one labelled outcome. Without an ``outcome_id`` one is made here, so a retried call stores it
        once; the response says whether it was a duplicate and how many labels arrived since training."""
        # Named here when the caller does not: a retried call then stores the outcome once.
        o = OutcomeInput(
            features, label, outcome_id or uuid.uuid4().hex, entities or {}, metadata or {}, occurred_at, prediction_id
        )
        request = training_pb2.RecordOutcomeRequest(model=model)
        outcome_to_proto(o, request.outcome)
        return self._call(self.training.RecordOutcome, request)

    def import_outcomes(
        self,
        model: str,
        outcomes: Iterable[OutcomeInput],
        *,
        batch_size: int = 1000,
        progress: Callable[[int], None] | None = None,
        timeout: float | None = None,
        columnar: bool = True,
    ) -> training_pb2.ImportOutcomesResponse:
        """Stream outcomes in batches; ``progress(n)`` is called after each batch is sent.

        Batches travel column by column (``columnar=True``, much cheaper for
        both sides); a batch whose feature mixes strings and numbers goes row-wise.
        """

        def message(batch: list[OutcomeInput], first: bool) -> training_pb2.ImportOutcomesRequest:
            request = training_pb2.ImportOutcomesRequest(model=model if first else "")
            if columnar and outcomes_to_columns(batch, request.columns):
                return request
            request.ClearField("columns")
            for o in batch:
                outcome_to_proto(o, request.outcomes.add())
            return request

        def batches() -> Iterator[training_pb2.ImportOutcomesRequest]:
            batch: list[OutcomeInput] = []
            first = True
            for o in outcomes:
                batch.append(o)
                if len(batch) >= batch_size:
                    yield message(batch, first)
                    if progress:
                        progress(len(batch))
                    batch, first = [], False
            if batch or first:
                yield message(batch, first)
                if progress and batch:
                    progress(len(batch))

        return self._call(self.training.ImportOutcomes, batches(), timeout=timeout or 3600.0)

    # --- training ---------------------------------------------------------

    def start_training(
        self,
        model: str,
        *,
        incremental: bool = False,
        families: Iterable[str] = (),
        time_ordered: bool = False,
        description: str = "",
    ) -> training_pb2.TrainingRun:
        """Queue a training run (``families`` by name, as "gradient_boosting"; none: the model's settings);
        returns the run. ValueError for an unknown family name; SahayakError FAILED_PRECONDITION when there
        are too few outcomes or a run is already active."""
        request = training_pb2.StartTrainingRequest(
            model=model,
            description=description,
            kind=training_pb2.TRAINING_KIND_INCREMENTAL if incremental else training_pb2.TRAINING_KIND_FULL,
            families=[registry_pb2.ModelFamily.Value("MODEL_FAMILY_" + f.upper()) for f in families],
            split=registry_pb2.SPLIT_STRATEGY_TIME_ORDERED if time_ordered else registry_pb2.SPLIT_STRATEGY_UNSPECIFIED,
        )
        return self._call(self.training.StartTraining, request).run

    def get_run(self, run_id: str) -> training_pb2.TrainingRun:
        """The training run with this id; SahayakError NOT_FOUND when there is none."""
        return self._call(self.training.GetTrainingRun, training_pb2.GetTrainingRunRequest(run_id=run_id)).run

    def watch_run(self, run_id: str, timeout: float | None = None) -> Iterator[training_pb2.WatchTrainingRunResponse]:
        """The run's progress events as they happen, the last carrying the run as it ended; ``timeout`` (None:
        none) bounds the whole stream."""
        try:
            yield from self.training.WatchTrainingRun(
                training_pb2.WatchTrainingRunRequest(run_id=run_id), timeout=timeout, metadata=self.metadata
            )
        except grpc.RpcError as err:
            raise SahayakError.from_rpc_error(err) from None

    def wait_run(self, run_id: str, timeout: float = 600.0) -> training_pb2.TrainingRun:
        """Follow a run to its end and return it as it ended."""
        for event in self.watch_run(run_id, timeout=timeout):
            if event.HasField("run"):
                return event.run
        return self.get_run(run_id)

    def train(self, model: str, timeout: float = 600.0, **kwargs: Any) -> training_pb2.TrainingRun:
        """Start a run and wait for its end."""
        return self.wait_run(self.start_training(model, **kwargs).run_id, timeout=timeout)

    # --- registry ---------------------------------------------------------

    def get_version(self, model: str, version: int = 0, alias: str = "") -> registry_pb2.ModelVersion:
        """The version named by number or by alias (neither: the champion); SahayakError NOT_FOUND when there is
        no such version or alias."""
        request = registry_pb2.GetModelVersionRequest(model=model, version=version, alias=alias)
        return self._call(self.registry.GetModelVersion, request).version

    def list_versions(self, model: str, include_archived: bool = False) -> Iterator[registry_pb2.ModelVersion]:
        """Every version of the model, newest first (the archived ones too with ``include_archived``), page by page."""
        token = ""
        while True:
            resp = self._call(
                self.registry.ListModelVersions,
                registry_pb2.ListModelVersionsRequest(model=model, page_token=token, include_archived=include_archived),
            )
            yield from resp.versions
            token = resp.next_page_token
            if not token:
                return

    def set_alias(
        self, model: str, alias: str, version: int, reason: str = "", force: bool = False
    ) -> registry_pb2.AliasEvent:
        """Point ``alias`` at ``version``; returns the alias event. SahayakError FAILED_PRECONDITION for an
        archived version, or a champion that failed its gate without ``force``."""
        request = registry_pb2.SetAliasRequest(model=model, alias=alias, version=version, reason=reason, force=force)
        return self._call(self.registry.SetAlias, request).event

    def rollback(self, model: str, reason: str = "") -> registry_pb2.AliasEvent:
        """Give the champion back to the version that held it before; returns the alias event.
        SahayakError FAILED_PRECONDITION when there is nothing to roll back to."""
        return self._call(
            self.registry.RollbackModel, registry_pb2.RollbackModelRequest(model=model, reason=reason)
        ).event

    def export_version(self, model: str, version: int = 0, alias: str = "") -> bytes:
        """The signed artifact of the version named by number or alias (neither: the champion)."""
        request = registry_pb2.ExportModelVersionRequest(model=model, version=version, alias=alias)
        return self._call(self.registry.ExportModelVersion, request).artifact

    def import_version(self, model: str, artifact: bytes, description: str = "") -> registry_pb2.ModelVersion:
        """Register an exported artifact as a new version of ``model`` (not promoted); SahayakError
        INVALID_ARGUMENT when it is unreadable, not signed with the server's key, or of another schema."""
        request = registry_pb2.ImportModelVersionRequest(model=model, artifact=artifact, description=description)
        return self._call(self.registry.ImportModelVersion, request).version

    # --- inference --------------------------------------------------------

    def predict(
        self,
        model: str,
        features: Mapping[str, Any],
        *,
        version: int = 0,
        alias: str = "",
        explain_top_k: int = 0,
        entities: Mapping[str, str] | None = None,
    ) -> inference_pb2.PredictResponse:
        """Score one row with the version named (neither: the champion), explained by the ``explain_top_k``
        largest contributions (0: the server's default, 3). SahayakError INVALID_ARGUMENT for a bad row,
        FAILED_PRECONDITION when the model has no champion."""
        request = inference_pb2.PredictRequest(model=model, version=version, alias=alias, explain_top_k=explain_top_k)
        fill_features(request.features, features)
        if entities:
            request.entities.update(entities)
        return self._call(self.inference.Predict, request)

    def predict_batch(
        self, model: str, rows: list[Mapping[str, Any]], *, version: int = 0, alias: str = "", columnar: bool = True
    ) -> inference_pb2.PredictBatchResponse:
        """Score many rows in one call (sent column by column unless ``columnar=False``)."""
        request = inference_pb2.PredictBatchRequest(model=model, version=version, alias=alias)
        if columnar and feature_columns(rows, request.columns):
            return self._call(self.inference.PredictBatch, request)
        request.ClearField("columns")
        for row in rows:
            fill_features(request.rows.add().features, row)
        return self._call(self.inference.PredictBatch, request)

    def recommend(
        self,
        model: str,
        subject: Mapping[str, Any],
        candidates: Iterable[tuple[str, Mapping[str, Any], float]],
        *,
        top_k: int = 0,
        weight_by_benefit: bool = False,
        explain_top_k: int = 0,
        columnar: bool = False,
    ) -> inference_pb2.RecommendResponse:
        """Rank candidates ``(id, features, benefit)`` for ``subject``; ``columnar`` sends them column by column."""
        request = inference_pb2.RecommendRequest(
            model=model, top_k=top_k, weight_by_benefit=weight_by_benefit, explain_top_k=explain_top_k
        )
        fill_features(request.subject_features, subject)
        candidates = list(candidates)
        if columnar:
            cc = request.candidate_columns
            cc.candidate_ids.extend([c[0] for c in candidates])
            cc.benefits.extend([c[2] for c in candidates])
            if feature_columns([dict(c[1]) for c in candidates], cc.features):
                return self._call(self.inference.Recommend, request)
            request.ClearField("candidate_columns")
        for cid, features, benefit in candidates:
            c = request.candidates.add(candidate_id=cid, benefit=benefit)
            fill_features(c.features, features)
        return self._call(self.inference.Recommend, request)

    def local_scorer(self, model: str, **kwargs: Any) -> LocalScorer:
        """A scorer that follows ``model``'s champion and scores in-process (see LocalScorer)."""
        from .local import LocalScorer

        return LocalScorer(self, model, **kwargs)

    # --- status -----------------------------------------------------------

    def watch_alerts(
        self, model: str = "", *, cursor: str = "", min_severity: int = 0, timeout: float | None = None
    ) -> Iterator[monitor_pb2.WatchAlertsResponse]:
        """Alert events as they happen (raised, acknowledged, resolved); each carries a
        ``cursor``: pass the last one seen to resume without missing an event."""
        request = monitor_pb2.WatchAlertsRequest(
            model=model, cursor=cursor, min_severity=monitor_pb2.AlertSeverity.ValueType(min_severity)
        )
        try:
            yield from self.monitor.WatchAlerts(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as err:
            raise SahayakError.from_rpc_error(err) from None

    def server_status(self) -> monitor_pb2.GetServerStatusResponse:
        """The answering replica's status: its version, uptime, models and queues."""
        return self._call(self.monitor.GetServerStatus, monitor_pb2.GetServerStatusRequest())
