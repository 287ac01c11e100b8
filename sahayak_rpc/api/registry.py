"""ModelRegistryService: declared models (this issue) and versions (later)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from .. import artifact as art
from ..app.catalog import Catalog
from ..app.context import AppContext
from ..app.registry import EvaluationRows, Registry
from ..errors import InvalidArgument
from ..schema import FieldError, Row
from ..store import ModelRecord
from .._proto.sahayak.v1 import registry_pb2, registry_pb2_grpc
from . import convert, convert_registry

_IMMUTABLE = {"name", "features", "label", "create_time", "update_time", "champion_version", "aliases"}


class _ModelsServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, registry: Registry) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._registry = registry

    def _model(self, record: ModelRecord) -> registry_pb2.Model:
        m = convert_registry.model_to_proto(record)
        aliases = self._registry.versions.aliases_of(record.id)
        m.aliases.update(aliases)
        m.champion_version = aliases.get("champion", 0)
        return m

    def CreateModel(
        self, request: registry_pb2.CreateModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.CreateModelResponse:
        m = request.model
        schema = convert_registry.schema_from_proto(m)
        partial = convert_registry.settings_proto_to_dict(m.settings)
        settings = convert_registry.settings_from_partial(partial, self._ctx.config.model_defaults)
        record = self._catalog.create(m.name, m.description, schema, settings)
        return registry_pb2.CreateModelResponse(model=self._model(record))

    def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.GetModelResponse:
        record = self._catalog.get(request.name, "name")
        return registry_pb2.GetModelResponse(model=self._model(record))

    def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        after = convert.decode_token(request.page_token)
        records, last = self._catalog.list(request.page_size, after)
        return registry_pb2.ListModelsResponse(
            models=[self._model(r) for r in records], next_page_token=convert.encode_token(last)
        )

    def UpdateModel(
        self, request: registry_pb2.UpdateModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.UpdateModelResponse:
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument.fields([FieldError("update_mask", "required: name the fields to change")])
        current = self._catalog.get(request.model.name, "model.name")
        description = current.description
        settings_paths: list[str] = []
        for i, path in enumerate(paths):
            head = path.split(".", 1)[0]
            if path == "description":
                description = request.model.description
            elif head == "settings":
                settings_paths.append(path[len("settings.") :] if "." in path else "")
            elif head in _IMMUTABLE:
                raise InvalidArgument.fields(
                    [FieldError(f"update_mask.paths[{i}]", f"{path!r} cannot be changed after creation")]
                )
            else:
                raise InvalidArgument.fields([FieldError(f"update_mask.paths[{i}]", f"unknown field {path!r}")])
        settings = current.settings
        if settings_paths:
            partial = convert_registry.settings_proto_to_dict(request.model.settings)
            if "" in settings_paths:
                settings = convert_registry.settings_from_partial(partial, self._ctx.config.model_defaults)
            else:
                settings = convert_registry.apply_update_mask(
                    settings, self._ctx.config.model_defaults, partial, settings_paths
                )
        record = self._catalog.update(current.name, description, settings)
        return registry_pb2.UpdateModelResponse(model=self._model(record))


class VersionsMixin:
    """The version, alias and artifact RPCs of ModelRegistryService."""

    _ctx: AppContext
    _catalog: Catalog
    _registry: Registry

    def _int_token(self, token: str) -> int:
        text = convert.decode_token(token)
        if not text:
            return 0
        value = convert.parse_int64(text)
        if value is None:
            raise InvalidArgument.fields([FieldError("page_token", "not a page token this server issued")])
        return value

    def ListModelVersions(
        self, request: registry_pb2.ListModelVersionsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListModelVersionsResponse:
        model = self._catalog.get(request.model)
        if request.page_size < 0:
            raise InvalidArgument.fields([FieldError("page_size", "must not be negative")])
        records, last = self._registry.list(
            model, request.page_size, self._int_token(request.page_token), request.include_archived
        )
        return registry_pb2.ListModelVersionsResponse(
            versions=[convert_registry.version_to_proto(model.name, r) for r in records],
            next_page_token=convert.encode_token(str(last) if last else ""),
        )

    def GetModelVersion(
        self, request: registry_pb2.GetModelVersionRequest, context: grpc.ServicerContext
    ) -> registry_pb2.GetModelVersionResponse:
        model = self._catalog.get(request.model)
        record = self._registry.get(model, request.version, request.alias)
        return registry_pb2.GetModelVersionResponse(version=convert_registry.version_to_proto(model.name, record))

    def _rows(self, model: ModelRecord, data: registry_pb2.EvaluationData) -> tuple[list[Row], np.ndarray]:
        which = data.WhichOneof("source")
        if which == "rows":
            now = self._ctx.now_us()
            given = []
            for i, o in enumerate(data.rows.rows):
                record, errors = convert.outcome_from_proto(o, now, f"data.rows.rows[{i}]", "eval")
                given.append((record.features, record.label, errors, f"data.rows.rows[{i}]"))
            return self._registry.evaluation_rows(model, EvaluationRows(rows=given))
        if which == "outcomes":
            start, end = convert.time_window(data.outcomes.window, "data.outcomes.window")
            return self._registry.evaluation_rows(model, EvaluationRows(window=(start, end, data.outcomes.last_n)))
        return self._registry.evaluation_rows(model, EvaluationRows())

    def EvaluateModelVersion(
        self, request: registry_pb2.EvaluateModelVersionRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EvaluateModelVersionResponse:
        model = self._catalog.get(request.model)
        served = self._registry.served(model, request.version, request.alias)
        rows, labels = self._rows(model, request.data)
        m = self._registry.evaluate(model, served, rows, labels)
        return registry_pb2.EvaluateModelVersionResponse(
            version=served.version, metrics=convert.metrics_to_proto(m.to_dict())
        )

    def CompareModelVersions(
        self, request: registry_pb2.CompareModelVersionsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.CompareModelVersionsResponse:
        model = self._catalog.get(request.model)
        if request.version_a <= 0 or request.version_b <= 0:
            raise InvalidArgument.fields(
                [FieldError("version_a" if request.version_a <= 0 else "version_b", "required")]
            )
        a = self._registry.served(model, request.version_a)
        b = self._registry.served(model, request.version_b)
        rows, labels = self._rows(model, request.data)
        ma, mb = self._registry.evaluate(model, a, rows, labels), self._registry.evaluate(model, b, rows, labels)
        da, db = ma.to_dict(), mb.to_dict()
        diff = {k: float(db[k]) - float(da[k]) for k in convert.COMPARED_METRICS}
        return registry_pb2.CompareModelVersionsResponse(
            metrics_a=convert.metrics_to_proto(da),
            metrics_b=convert.metrics_to_proto(db),
            difference=diff,
            row_count=len(rows),
        )

    def SetAlias(
        self, request: registry_pb2.SetAliasRequest, context: grpc.ServicerContext
    ) -> registry_pb2.SetAliasResponse:
        model = self._catalog.get(request.model)
        event = self._registry.set_alias(model, request.alias, request.version, request.reason, request.force)
        return registry_pb2.SetAliasResponse(event=convert_registry.alias_event_to_proto(model.name, event))

    def DeleteAlias(
        self, request: registry_pb2.DeleteAliasRequest, context: grpc.ServicerContext
    ) -> registry_pb2.DeleteAliasResponse:
        model = self._catalog.get(request.model)
        event = self._registry.delete_alias(model, request.alias, request.reason)
        return registry_pb2.DeleteAliasResponse(event=convert_registry.alias_event_to_proto(model.name, event))

    def ListAliasHistory(
        self, request: registry_pb2.ListAliasHistoryRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListAliasHistoryResponse:
        model = self._catalog.get(request.model)
        if request.page_size < 0:
            raise InvalidArgument.fields([FieldError("page_size", "must not be negative")])
        events, last = self._registry.history(
            model, request.alias, request.page_size, self._int_token(request.page_token)
        )
        return registry_pb2.ListAliasHistoryResponse(
            events=[convert_registry.alias_event_to_proto(model.name, e) for e in events],
            next_page_token=convert.encode_token(str(last) if last else ""),
        )

    def RollbackModel(
        self, request: registry_pb2.RollbackModelRequest, context: grpc.ServicerContext
    ) -> registry_pb2.RollbackModelResponse:
        model = self._catalog.get(request.model)
        event = self._registry.rollback(model, request.reason)
        return registry_pb2.RollbackModelResponse(event=convert_registry.alias_event_to_proto(model.name, event))

    def ArchiveModelVersion(
        self, request: registry_pb2.ArchiveModelVersionRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ArchiveModelVersionResponse:
        model = self._catalog.get(request.model)
        if request.version <= 0:
            raise InvalidArgument.fields([FieldError("version", "required")])
        record = self._registry.archive(model, request.version)
        return registry_pb2.ArchiveModelVersionResponse(version=convert_registry.version_to_proto(model.name, record))

    def ExportModelVersion(
        self, request: registry_pb2.ExportModelVersionRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ExportModelVersionResponse:
        model = self._catalog.get(request.model)
        data, record = self._registry.export(model, request.version, request.alias)
        return registry_pb2.ExportModelVersionResponse(artifact=data, sha256=record.artifact_sha256, format=art.FORMAT)

    def ImportModelVersion(
        self, request: registry_pb2.ImportModelVersionRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ImportModelVersionResponse:
        model = self._catalog.get(request.model)
        if not request.artifact:
            raise InvalidArgument.fields([FieldError("artifact", "required")])
        record = self._registry.import_(model, request.artifact, request.description)
        return registry_pb2.ImportModelVersionResponse(version=convert_registry.version_to_proto(model.name, record))

    def WatchChampion(
        self, request: registry_pb2.WatchChampionRequest, context: grpc.ServicerContext
    ) -> Iterator[registry_pb2.WatchChampionResponse]:
        model = self._catalog.get(request.model)
        for served in self._registry.watch(model, context.is_active):
            if served is None:
                continue  # nothing serves yet: wait for the first champion
            data, record = self._registry.export(model, served.version, "")
            yield registry_pb2.WatchChampionResponse(
                version=convert_registry.version_to_proto(model.name, record), artifact=data
            )


class ModelRegistryServicer(VersionsMixin, _ModelsServicer):
    """ModelRegistryService: declared models, their versions and aliases."""
