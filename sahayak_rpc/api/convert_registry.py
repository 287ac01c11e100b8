"""Converters of ModelRegistryService: schemas, settings, models, versions, gates and alias events."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


from .. import settings as ms
from ..errors import InvalidArgument
from ..schema import FeatureSpec, FeatureType, FieldError, LabelSpec, Schema, SchemaError, check_label, check_schema
from ..store import ModelRecord
from .._proto.sahayak.v1 import registry_pb2
from .convert import stored_number, duration_to_s, enum_to_proto, metrics_to_proto, s_to_duration, us_to_ts


_TYPES = {
    registry_pb2.FEATURE_TYPE_NUMERIC: FeatureType.NUMERIC,
    registry_pb2.FEATURE_TYPE_CATEGORICAL: FeatureType.CATEGORICAL,
    registry_pb2.FEATURE_TYPE_BOOLEAN: FeatureType.BOOLEAN,
}


_TYPES_BACK = {v: k for k, v in _TYPES.items()}


def schema_from_proto(m: registry_pb2.Model) -> Schema:
    errors: list[FieldError] = []
    feats = []
    for i, f in enumerate(m.features):
        ftype = _TYPES.get(f.type)
        if ftype is None:
            errors.append(
                FieldError(f"model.features[{i}].type", "must be FEATURE_TYPE_NUMERIC, _CATEGORICAL or _BOOLEAN")
            )
            continue
        feats.append(
            FeatureSpec(
                name=f.name,
                type=ftype,
                required=f.required,
                description=f.description,
                min=f.min if f.HasField("min") else None,
                max=f.max if f.HasField("max") else None,
                categories=tuple(f.categories),
                allow_unknown_categories=f.allow_unknown_categories,
                group=f.group,
            )
        )
    label = LabelSpec(
        name=m.label.name or "label",
        positive_class=m.label.positive_class or "positive",
        negative_class=m.label.negative_class or "negative",
        description=m.label.description,
    )
    # Every problem at once; the declaration's own checks only when every feature has its type (the indices match).
    problems = check_label(label) + ([] if errors else check_schema(feats))
    errors += [FieldError("model." + e.field, e.reason) for e in problems]
    if errors:
        raise InvalidArgument.fields(errors)
    try:
        return Schema(tuple(feats), label)
    except SchemaError as exc:
        raise InvalidArgument.fields([FieldError("model." + e.field, e.reason) for e in exc.errors]) from None


def schema_to_proto(schema: Schema, target: registry_pb2.Model) -> None:
    for f in schema.features:
        spec = target.features.add(
            name=f.name,
            type=_TYPES_BACK[f.type],
            required=f.required,
            description=f.description,
            categories=f.categories,
            allow_unknown_categories=f.allow_unknown_categories,
            group=f.group,
        )
        if f.min is not None:
            spec.min = f.min
        if f.max is not None:
            spec.max = f.max
    target.label.CopyFrom(
        registry_pb2.LabelSpec(
            name=schema.label.name,
            positive_class=schema.label.positive_class,
            negative_class=schema.label.negative_class,
            description=schema.label.description,
        )
    )


_FAMILY_PREFIX = "MODEL_FAMILY_"


_SPLIT_PREFIX = "SPLIT_STRATEGY_"


# proto field name -> domain field name where they differ (durations carry a unit).
_RENAMES = {
    "retrain_interval": "retrain_interval_s",
    "alert_cooldown": "alert_cooldown_s",
    "freshness_limit": "freshness_limit_s",
}


def _family_name(value: int, path: str) -> str:
    try:
        name = registry_pb2.ModelFamily.Name(value)  # type: ignore[arg-type]
    except ValueError:
        name = ""
    if not name.startswith(_FAMILY_PREFIX) or value == registry_pb2.MODEL_FAMILY_UNSPECIFIED:
        raise InvalidArgument.fields([FieldError(path, f"unknown model family {value}")])
    return name[len(_FAMILY_PREFIX) :].lower()


def settings_proto_to_dict(p: registry_pb2.ModelSettings, path: str = "model.settings") -> dict[str, Any]:
    """Only the fields the message sets, keyed by domain names."""

    def walk(msg: Any, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, value in msg.ListFields():
            name = _RENAMES.get(field.name, field.name)
            if field.message_type is not None and field.message_type.full_name == "google.protobuf.Duration":
                seconds = duration_to_s(value)
                if not math.isfinite(seconds) or seconds < 0:
                    raise InvalidArgument.fields([FieldError(f"{where}.{field.name}", "must not be negative")])
                out[name] = seconds
            elif field.name == "families":
                out[name] = tuple(_family_name(v, f"{where}.families") for v in value)
            elif field.name == "split":
                label = registry_pb2.SplitStrategy.Name(value) if value in registry_pb2.SplitStrategy.values() else ""
                out[name] = label[len(_SPLIT_PREFIX) :].lower() if label else f"unknown({value})"
            elif field.message_type is not None:
                out[name] = walk(value, f"{where}.{field.name}")
            else:
                out[name] = value
        return out

    return walk(p, path)


def settings_to_proto(s: ms.ModelSettings) -> registry_pb2.ModelSettings:
    t, g, m = s.training, s.gate, s.monitoring
    return registry_pb2.ModelSettings(
        decision_threshold=s.decision_threshold,
        training=registry_pb2.TrainingSettings(
            retrain_interval=s_to_duration(t.retrain_interval_s),
            incremental_every=t.incremental_every,
            validation_fraction=t.validation_fraction,
            split=registry_pb2.SplitStrategy.Value(_SPLIT_PREFIX + t.split.upper()),
            min_samples=t.min_samples,
            families=[registry_pb2.ModelFamily.Value(_FAMILY_PREFIX + f.upper()) for f in t.families],
            logistic_regression=registry_pb2.LogisticRegressionParams(**vars(t.logistic_regression)),
            gradient_boosting=registry_pb2.GradientBoostingParams(**vars(t.gradient_boosting)),
            random_seed=t.random_seed,
            schedule_enabled=t.schedule_enabled,
        ),
        gate=registry_pb2.QualityGate(**vars(g)),
        monitoring=registry_pb2.MonitoringSettings(
            drift_psi_threshold=m.drift_psi_threshold,
            drift_share=m.drift_share,
            alert_cooldown=s_to_duration(m.alert_cooldown_s),
            freshness_limit=s_to_duration(m.freshness_limit_s),
            retrain_on_breach=m.retrain_on_breach,
        ),
    )


def settings_from_partial(partial: dict[str, Any], base: ms.ModelSettings) -> ms.ModelSettings:
    try:
        return ms.from_dict(partial, base)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument.fields([FieldError("model.settings", str(exc))]) from None


def apply_update_mask(
    current: ms.ModelSettings, defaults: ms.ModelSettings, partial: dict[str, Any], paths: list[str]
) -> ms.ModelSettings:
    """AIP-134 semantics: a masked field takes the request's value, or the server default if unset."""
    merged = ms.to_dict(current)
    base = ms.to_dict(defaults)
    for i, path in enumerate(paths):
        parts = [_RENAMES.get(p, p) for p in path.split(".")]
        target, src_default, src = merged, base, partial
        for depth, key in enumerate(parts):
            if not isinstance(target, dict) or key not in target:
                raise InvalidArgument.fields([FieldError(f"update_mask.paths[{i}]", f"unknown field {path!r}")])
            last = depth == len(parts) - 1
            if last:
                value = src.get(key) if isinstance(src, dict) else None
                if isinstance(src_default[key], dict):
                    value = _deep_merge(src_default[key], value or {})
                elif value is None:
                    value = src_default[key]
                target[key] = value
            else:
                target, src_default = target[key], src_default[key]
                src = src.get(key, {}) if isinstance(src, dict) else {}
    return settings_from_partial(merged, ms.ModelSettings())


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def model_to_proto(record: ModelRecord) -> registry_pb2.Model:
    m = registry_pb2.Model(
        name=record.name,
        description=record.description,
        settings=settings_to_proto(record.settings),
        create_time=us_to_ts(record.created_us),
        update_time=us_to_ts(record.updated_us),
    )
    schema_to_proto(record.schema, m)
    return m


def gate_to_proto(g: Mapping[str, Any] | None) -> registry_pb2.GateResult:
    if not g:
        return registry_pb2.GateResult()
    return registry_pb2.GateResult(
        passed=bool(g["passed"]),
        baseline_version=int(g["baseline_version"]),
        reasons=list(g["reasons"]),
        checks=[
            registry_pb2.GateCheck(
                metric=c["metric"],
                comparison=c["comparison"],
                threshold=stored_number(c["threshold"]),
                value=stored_number(c["value"]),
                passed=c["passed"],
            )
            for c in g["checks"]
        ],
    )


def version_to_proto(model_name: str, v: Any) -> registry_pb2.ModelVersion:
    lineage = v.lineage or {}
    params = lineage.get("parameters") or {}
    out = registry_pb2.ModelVersion(
        model=model_name,
        version=v.version,
        family=enum_to_proto(registry_pb2.ModelFamily, "MODEL_FAMILY_", v.family),
        status=enum_to_proto(registry_pb2.ModelVersionStatus, "MODEL_VERSION_STATUS_", v.status),
        aliases=list(v.aliases),
        validation_metrics=metrics_to_proto(v.metrics),
        gate=gate_to_proto(v.gate),
        feature_weights=[registry_pb2.FeatureWeight(feature=f, weight=stored_number(w)) for f, w in v.weights],
        lineage=registry_pb2.Lineage(
            source=enum_to_proto(registry_pb2.VersionSource, "VERSION_SOURCE_", v.source),
            training_run_id=v.training_run_id,
            parent_version=v.parent_version,
            outcome_count=int(lineage.get("outcome_count", 0)),
            parameters={str(k): str(val) for k, val in params.items()},
            artifact_sha256=v.artifact_sha256,
        ),
        calibration=enum_to_proto(registry_pb2.CalibrationMethod, "CALIBRATION_METHOD_", v.calibration),
        decision_threshold=v.threshold,
        create_time=us_to_ts(v.created_us),
        description=v.description,
        artifact_size_bytes=v.artifact_size,
    )
    for key, field in (("first_outcome_us", "first_outcome_time"), ("last_outcome_us", "last_outcome_time")):
        if lineage.get(key):
            getattr(out.lineage, field).CopyFrom(us_to_ts(int(lineage[key])))
    if lineage.get("imported_from"):
        out.lineage.parameters["imported_from"] = str(lineage["imported_from"])
    return out


def alias_event_to_proto(model_name: str, e: Any) -> registry_pb2.AliasEvent:
    return registry_pb2.AliasEvent(
        event_id=e.event_id,
        model=model_name,
        alias=e.alias,
        version=e.version,
        previous_version=e.previous_version,
        reason=e.reason,
        time=us_to_ts(e.created_us),
    )
