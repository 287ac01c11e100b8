"""InferenceService: Predict, PredictBatch, Recommend."""

from __future__ import annotations

import grpc

from ..app.catalog import Catalog, PerSchema
from ..app.inference import Inference, Ranked
from ..errors import InvalidArgument
from ..schema import FieldError, Row
from .._proto.sahayak.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from . import convert, convert_inference

_POS, _NEG = common_pb2.LABEL_POSITIVE, common_pb2.LABEL_NEGATIVE
_BATCH_FIELDS = inference_pb2.PredictBatchResponse.DESCRIPTOR.fields_by_name
_PROBABILITIES, _LABELS = _BATCH_FIELDS["probabilities"].number, _BATCH_FIELDS["labels"].number


def _entities(entities: object, path: str) -> dict[str, str] | None:
    if not entities:
        return None
    errors: list[FieldError] = []
    convert.check_string_map(entities, path, errors)  # type: ignore[arg-type]
    if errors:
        raise InvalidArgument.fields(errors)
    return dict(entities)  # type: ignore[call-overload]


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, catalog: Catalog, inference: Inference) -> None:
        self._catalog = catalog
        self._inference = inference
        self._fields = PerSchema(convert.value_fields)

    def Predict(
        self, request: inference_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictResponse:
        model = self._catalog.get(request.model)
        row = convert.row_from_proto(request.features, self._fields(model))
        p = self._inference.predict(
            model, request.version, request.alias, row, request.explain_top_k, _entities(request.entities, "entities")
        )
        response = inference_pb2.PredictResponse(
            prediction_id=p.prediction_id, probability=p.probability, label=_POS if p.label else _NEG, version=p.version
        )
        convert_inference.contributions_to_proto(p.contributions, row, response.contributions)
        return response

    def PredictBatch(
        self, request: inference_pb2.PredictBatchRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictBatchResponse:
        model = self._catalog.get(request.model)
        has_cols = request.HasField("columns")
        if has_cols == bool(request.rows):
            raise InvalidArgument.fields([FieldError("rows", "give exactly one of rows or columns")])
        rows: list[Row] | None = None
        columns = convert.columns_from_proto(request.columns) if has_cols else []
        if has_cols:
            batch_id, served, probs = self._inference.predict_columns(
                model, request.version, request.alias, request.columns.row_count, columns
            )
        else:
            rows = [convert.row_from_proto(r.features) for r in request.rows]
            batch_id, served, probs = self._inference.predict_rows(model, request.version, request.alias, rows)
        response = inference_pb2.PredictBatchResponse(version=served.version, batch_id=batch_id)
        # Both arrays in their packed wire form, read in C (convert_inference.packed_field).
        response.MergeFromString(
            convert_inference.packed_doubles(_PROBABILITIES, probs)
            + convert_inference.packed_labels(_LABELS, probs >= served.model.threshold)
        )
        for row, parts in self._inference.explain_batch(
            model, served, rows, request.columns.row_count, columns, request.explain_top_k
        ):
            convert_inference.contributions_to_proto(parts, row, response.explanations.add().contributions)
        return response

    def Recommend(
        self, request: inference_pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> inference_pb2.RecommendResponse:
        model = self._catalog.get(request.model)
        subject = convert.row_from_proto(request.subject_features)
        if request.HasField("candidate_columns"):
            if request.candidates:
                raise InvalidArgument.fields(
                    [FieldError("candidates", "give candidates or candidate_columns, not both")]
                )
            cc = request.candidate_columns
            rec_id, version, ranked = self._inference.recommend_columns(
                model,
                request.version,
                request.alias,
                subject,
                list(cc.candidate_ids),
                list(cc.benefits),
                convert.columns_from_proto(cc.features),
                request.top_k,
                request.weight_by_benefit,
                request.explain_top_k,
            )
            return _recommend_response(rec_id, version, ranked)
        candidates = [(c.candidate_id, convert.row_from_proto(c.features), c.benefit) for c in request.candidates]
        if not candidates:
            raise InvalidArgument.fields([FieldError("candidates", "required: at least one candidate")])
        rec_id, version, ranked = self._inference.recommend(
            model,
            request.version,
            request.alias,
            subject,
            candidates,
            request.top_k,
            request.weight_by_benefit,
            request.explain_top_k,
            _entities(request.entities, "entities"),
        )
        return _recommend_response(rec_id, version, ranked)


def _recommend_response(rec_id: str, version: int, ranked: list[Ranked]) -> inference_pb2.RecommendResponse:
    """Recommend's answer: each ranked candidate, its contributions valued from the row it was scored on."""
    response = inference_pb2.RecommendResponse(recommendation_id=rec_id, version=version)
    for r in ranked:
        out = response.recommendations.add(
            candidate_id=r.candidate_id,
            rank=r.rank,
            probability=r.probability,
            score=r.score,
            label=_POS if r.label else _NEG,
            prediction_id=r.prediction_id,
        )
        convert_inference.contributions_to_proto(r.contributions, r.explained or {}, out.contributions)
    return response
