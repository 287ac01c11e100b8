"""inference.GRPCInferenceService: our models over the Open Inference Protocol (KServe V2).

Every model in the catalog is an OIP model of the same name. Its versions are
the registered (not archived) version numbers, as strings; an empty version
means the champion. A model takes ONE input, ``features``: FP32 (or FP64),
shape ``[n, F]``, the model's F schema features in schema order, one row per
prediction:

- numeric: the value;
- boolean: 0 or 1;
- categorical: the index of the value in the feature's declared
  ``categories`` (0-based; a category outside that list cannot be sent);
- NaN: missing (a required feature may not be missing).

It answers ``probability`` (FP32, ``[n, 1]``, the positive class's
calibrated probability: what Predict answers) and ``label`` (INT32,
``[n, 1]``, 1 when probability >= the version's threshold, i.e. the
positive class). Outputs go back in ``raw_output_contents`` (little-endian),
as Triton does. The batch lands in the prediction log like a PredictBatch
call, so monitoring sees it. docs/oip.md has the details.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from ..app.catalog import Catalog, PerSchema
from ..app.context import AppContext
from ..app.inference import MAX_BATCH_ROWS, Inference
from ..app.registry import Registry
from ..errors import InvalidArgument, ServiceError
from ..schema import FeatureType, FieldError, Schema
from .._proto.inference import open_inference_grpc_pb2 as pb, open_inference_grpc_pb2_grpc as pb_grpc
from . import convert

INPUT = "features"
PROBABILITY, LABEL = "probability", "label"
OUTPUTS = (PROBABILITY, LABEL)
BATCH_ID = "batch_id"  # a response parameter
SERVER_NAME = "sahayak-rpc"
# The response headers of ModelMetadata that describe the input layout
# (the spec's ModelMetadataResponse has no free-form field for it).
LAYOUT_HEADER = "sahayak-input-layout"
THRESHOLD_HEADER = "sahayak-label-threshold"
_LAYOUT_MAX_BYTES = 6000  # well under gRPC's default 8 KiB header budget
_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_TYPED = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
          "fp32_contents", "fp64_contents", "bytes_contents")
_KIND = {FeatureType.NUMERIC: "numeric", FeatureType.BOOLEAN: "boolean", FeatureType.CATEGORICAL: "categorical"}


def _bad(field: str, reason: str) -> InvalidArgument:
    return InvalidArgument.fields([FieldError(field, reason)])


@dataclass(frozen=True)
class Layout:
    """How a model's schema lays out along the ``features`` tensor's second axis."""

    names: tuple[str, ...]
    header: str  # the layout as JSON, for the ModelMetadata response's headers

    @classmethod
    def of(cls, schema: Schema) -> Layout:
        feats = schema.features
        full = [{"name": f.name, "type": _KIND[f.type], **({"categories": list(f.categories)}
                                                            if f.type is FeatureType.CATEGORICAL else {})}
                for f in feats]
        header = json.dumps(full, separators=(",", ":"))  # ASCII: non-ASCII is escaped
        if len(header) > _LAYOUT_MAX_BYTES:
            # Too big for a header: names and kinds only; the categories are in GetModel.
            header = json.dumps([{"name": f.name, "type": _KIND[f.type]} for f in feats], separators=(",", ":"))
            if len(header) > _LAYOUT_MAX_BYTES:
                header = ""
        return cls(tuple(f.name for f in feats), header)


def _version(text: str, field: str) -> int:
    """An OIP version string as our version number; 0 for empty (the champion)."""
    if not text:
        return 0
    version = convert.parse_int64(text)
    if not version:
        raise _bad(field, f"{text[:40]!r} is not a version number (a positive integer, or empty for the champion)")
    return version


class OpenInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, ctx: AppContext, catalog: Catalog, registry: Registry, inference: Inference,
                 server_version: str) -> None:
        self._ctx = ctx
        self._catalog = catalog
        self._registry = registry
        self._inference = inference
        self._server_version = server_version
        self._layout = PerSchema(Layout.of)

    # --- health and metadata ------------------------------------------------

    def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self._ctx.stopping.is_set())

    def ServerMetadata(self, request: pb.ServerMetadataRequest,
                       context: grpc.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._server_version)

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        if not request.name:
            raise _bad("name", "required")
        version = _version(request.version, "version")
        try:
            model = self._catalog.get(request.name, "name")
            if not version:
                return pb.ModelReadyResponse(ready=self._registry.champion(model) is not None)
            self._registry.served(model, version)  # loads (and verifies) the version's artifact
        except ServiceError:  # unknown model or version, archived version: not ready
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request: pb.ModelMetadataRequest,
                      context: grpc.ServicerContext) -> pb.ModelMetadataResponse:
        model = self._catalog.get(request.name, "name")
        version = _version(request.version, "version")
        versions: list[int] = []
        before = 0
        while True:
            page, before = self._registry.list(model, 500, before, include_archived=False)
            versions += [r.version for r in page]
            if not before:
                break
        family = threshold = None
        if version:
            record = self._registry.get(model, version)  # NOT_FOUND for an unknown version
            family, threshold = record.family, record.threshold
        else:
            served = self._registry.champion(model)
            if served is not None:
                family, threshold = served.model.family, served.model.threshold
        layout = self._layout(model)
        headers = [(LAYOUT_HEADER, layout.header)] if layout.header else []
        if threshold is not None:
            headers.append((THRESHOLD_HEADER, repr(float(threshold))))
        if headers:
            context.send_initial_metadata(headers)
        column = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name, versions=[str(v) for v in sorted(versions)],
            platform=f"sahayak_{family}" if family else "sahayak",
            inputs=[column(name=INPUT, datatype="FP32", shape=[-1, len(layout.names)])],
            outputs=[column(name=PROBABILITY, datatype="FP32", shape=[-1, 1]),
                     column(name=LABEL, datatype="INT32", shape=[-1, 1])])

    # --- inference ------------------------------------------------------------

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        model = self._catalog.get(request.model_name, "model_name")
        version = _version(request.model_version, "model_version")
        layout = self._layout(model)
        wanted = _requested_outputs(request.outputs)
        x = _input_matrix(request, len(layout.names))
        # The tensor's layout is the scorer's raw layout: it goes in as it is, checked and logged.
        batch_id, served, probs = self._inference.predict_matrix(model, version, "", x, field=INPUT)
        n = len(probs)
        response = pb.ModelInferResponse(model_name=model.name, model_version=str(served.version), id=request.id)
        # Row i's prediction id is "<batch_id>:<i>": outcomes and feedback can name it.
        response.parameters[BATCH_ID].string_param = batch_id
        add = response.outputs.add
        raw = response.raw_output_contents
        for name in wanted:
            if name == PROBABILITY:
                add(name=PROBABILITY, datatype="FP32", shape=(n, 1))
                raw.append(probs.astype("<f4").tobytes())
            else:
                add(name=LABEL, datatype="INT32", shape=(n, 1))
                raw.append((probs >= served.model.threshold).astype("<i4").tobytes())
        return response


def _requested_outputs(outputs: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor]) -> Sequence[str]:
    if not outputs:
        return OUTPUTS
    names: list[str] = []
    for i, out in enumerate(outputs):
        if out.name not in OUTPUTS:
            raise _bad(f"outputs[{i}].name", f"unknown output {out.name[:64]!r}; this model has {', '.join(OUTPUTS)}")
        if out.name in names:
            raise _bad(f"outputs[{i}].name", f"output {out.name!r} requested twice")
        if "classification" in out.parameters:
            raise _bad(f"outputs[{i}].parameters", "the classification extension is not supported")
        names.append(out.name)
    return names


def _input_matrix(request: pb.ModelInferRequest, width: int) -> np.ndarray:
    """The ``features`` tensor as an ``[n, width]`` array, checked against the model's layout."""
    if len(request.inputs) != 1:
        raise _bad("inputs", f"this model takes exactly one input, {INPUT!r} (FP32 [n, {width}]); "
                             f"got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != INPUT:
        raise _bad("inputs[0].name", f"unknown input {tensor.name[:64]!r}; this model's input is {INPUT!r}")
    dtype = _DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _bad("inputs[0].datatype", f"{tensor.datatype[:16]!r} is not accepted: send FP32 (or FP64)")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != width or shape[0] < 0:
        raise _bad("inputs[0].shape", f"{shape} does not match [n, {width}]: one row per prediction, "
                                      f"the model's {width} features in schema order")
    n = shape[0]
    if n > MAX_BATCH_ROWS:
        raise _bad("inputs[0].shape", f"at most {MAX_BATCH_ROWS} rows per call; got {n}")
    has_typed = tensor.HasField("contents")
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise _bad("raw_input_contents", f"has {len(request.raw_input_contents)} entries for 1 input")
        if has_typed:
            raise _bad("inputs[0].contents", "give the elements in raw_input_contents or in contents, not both")
        data = request.raw_input_contents[0]
        if len(data) != n * width * dtype.itemsize:
            raise _bad("raw_input_contents[0]", f"has {len(data)} bytes; shape {shape} of {tensor.datatype} "
                                                f"needs {n * width * dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype).reshape(n, width)
    field = "fp32_contents" if tensor.datatype == "FP32" else "fp64_contents"
    contents = tensor.contents
    for other in _TYPED:
        if other != field and len(getattr(contents, other)):
            raise _bad(f"inputs[0].contents.{other}", f"a {tensor.datatype} tensor's elements go in {field}")
    values = getattr(contents, field)
    if len(values) != n * width:
        raise _bad(f"inputs[0].contents.{field}", f"has {len(values)} elements; shape {shape} needs {n * width}")
    return np.array(values, dtype=dtype).reshape(n, width)  # read in C, not element by element

