"""ModelRegistryService: declared models (this issue) and versions (later)."""

from __future__ import annotations

import grpc

from ..app.catalog import Catalog
from ..app.context import AppContext
from ..errors import InvalidArgument
from ..schema import FieldError
from .._proto.sahayak.v1 import registry_pb2, registry_pb2_grpc
from . import convert

_IMMUTABLE = {"name", "features", "label", "create_time", "update_time", "champion_version", "aliases"}


class ModelRegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog) -> None:
        self._ctx = ctx
        self._catalog = catalog

    def CreateModel(self, request: registry_pb2.CreateModelRequest, context: grpc.ServicerContext) -> registry_pb2.CreateModelResponse:
        m = request.model
        schema = convert.schema_from_proto(m)
        partial = convert.settings_proto_to_dict(m.settings)
        settings = convert.settings_from_partial(partial, self._ctx.config.model_defaults)
        record = self._catalog.create(m.name, m.description, schema, settings)
        return registry_pb2.CreateModelResponse(model=convert.model_to_proto(record))

    def GetModel(self, request: registry_pb2.GetModelRequest, context: grpc.ServicerContext) -> registry_pb2.GetModelResponse:
        record = self._catalog.get(request.name, "name")
        return registry_pb2.GetModelResponse(model=convert.model_to_proto(record))

    def ListModels(self, request: registry_pb2.ListModelsRequest, context: grpc.ServicerContext) -> registry_pb2.ListModelsResponse:
        after = convert.decode_token(request.page_token)
        records, last = self._catalog.list(request.page_size, after)
        return registry_pb2.ListModelsResponse(
            models=[convert.model_to_proto(r) for r in records], next_page_token=convert.encode_token(last)
        )

    def UpdateModel(self, request: registry_pb2.UpdateModelRequest, context: grpc.ServicerContext) -> registry_pb2.UpdateModelResponse:
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
                settings_paths.append(path[len("settings."):] if "." in path else "")
            elif head in _IMMUTABLE:
                raise InvalidArgument.fields([FieldError(f"update_mask.paths[{i}]", f"{path!r} cannot be changed after creation")])
            else:
                raise InvalidArgument.fields([FieldError(f"update_mask.paths[{i}]", f"unknown field {path!r}")])
        settings = current.settings
        if settings_paths:
            partial = convert.settings_proto_to_dict(request.model.settings)
            if "" in settings_paths:
                settings = convert.settings_from_partial(partial, self._ctx.config.model_defaults)
            else:
                settings = convert.apply_update_mask(settings, self._ctx.config.model_defaults, partial, settings_paths)
        record = self._catalog.update(current.name, description, settings)
        return registry_pb2.UpdateModelResponse(model=convert.model_to_proto(record))

