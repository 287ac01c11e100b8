"""inference.GRPCInferenceService: our models over the Open Inference Protocol (KServe V2).

Every model in the catalog is an OIP model of the same name. Its versions are
the registered (not archived) version numbers, as strings; an empty version
means the champion. A model takes its rows in one of two forms:

1. ONE input, ``features``: FP32 (or FP64), shape ``[n, F]``, the model's F
   schema features in schema order, one row per prediction:

   - numeric: the value;
   - boolean: 0 or 1;
   - categorical: the index of the value in the feature's declared
     ``categories`` (0-based; a category outside that list cannot be sent);
   - NaN: missing (a required feature may not be missing).

2. One input per feature, named exactly as the feature, shape ``[n, 1]``
   (or ``[n]``), as MLServer's pandas codec sends a DataFrame's columns:
   FP64 (or FP32, INT64, INT32) for a numeric feature, BOOL (or 0/1 in
   FP64, FP32, INT64, INT32) for a boolean, BYTES (UTF-8, one of the
   declared categories; the empty string is missing) for a categorical. An
   optional feature may be left out (missing in every row); a required one
   may not. ``ModelMetadata`` lists these inputs after ``features``, so a
   client that knows only the model's name learns the layout.

Both forms are decoded into the same raw-layout float64 (or, for
``features``, FP32 / FP64) matrix and go through ``Inference.predict_matrix``:
the same checks, scoring and logging. Mixing them is INVALID_ARGUMENT.

It answers ``probability`` (FP32, ``[n, 1]``, the positive class's
calibrated probability: what Predict answers) and ``label`` (INT32,
``[n, 1]``, 1 when probability >= the version's threshold, i.e. the
positive class). Outputs go back in ``raw_output_contents`` (little-endian),
as Triton does. The batch lands in the prediction log like a PredictBatch
call, so monitoring sees it. docs/oip.md has the details.
"""

from __future__ import annotations

import json
import math
import re
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
_TYPED = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
_KIND = {FeatureType.NUMERIC: "numeric", FeatureType.BOOLEAN: "boolean", FeatureType.CATEGORICAL: "categorical"}

# Named inputs (one per feature). The element types a datatype reads as (BYTES: length-prefixed, below),
# where its typed elements go, and what each kind of feature accepts: the first is what ModelMetadata lists.
_ELEMENT: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("u1"),
}
_TYPED_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
_NUMBERS = ("FP64", "FP32", "INT64", "INT32")
_ACCEPTS: dict[FeatureType, tuple[str, ...]] = {
    FeatureType.NUMERIC: _NUMBERS,
    FeatureType.BOOLEAN: ("BOOL", *_NUMBERS),
    FeatureType.CATEGORICAL: ("BYTES",),
}
_NAMED_SHAPE = [-1, 1]  # as MLServer's pandas codec sends a column; [n] is accepted too
# predict_matrix names a bad cell "<field>[i, j] (<feature>)"; for named inputs it becomes "<feature>[i]".
_ROWS = "rows"
_CELL = re.compile(rf"^{_ROWS}\[(\d+), (\d+)\] \(")
_MAX_VALUE_ERRORS = 20


def _bad(field: str, reason: str) -> InvalidArgument:
    return InvalidArgument.fields([FieldError(field, reason)])


@dataclass(frozen=True, eq=False)
class Layout:
    """How a model's schema lays out: along the ``features`` tensor's second axis, and as named inputs."""

    names: tuple[str, ...]
    header: str  # the layout as JSON, for the ModelMetadata response's headers
    kinds: tuple[FeatureType, ...]
    required: tuple[bool, ...]
    column: dict[str, int]  # feature name -> its column
    # Per categorical feature: its categories' UTF-8 bytes -> index (b"" -> NaN, missing); None otherwise.
    codes: tuple[dict[bytes, float] | None, ...]
    # False when a feature is itself named "features": the name then means that feature's input
    # (unless the request is one [n, F] tensor, F > 1), and ModelMetadata lists it once, as the feature.
    tensor_listed: bool

    @classmethod
    def of(cls, schema: Schema) -> Layout:
        feats = schema.features
        full = [
            {
                "name": f.name,
                "type": _KIND[f.type],
                **({"categories": list(f.categories)} if f.type is FeatureType.CATEGORICAL else {}),
            }
            for f in feats
        ]
        header = json.dumps(full, separators=(",", ":"))  # ASCII: non-ASCII is escaped
        if len(header) > _LAYOUT_MAX_BYTES:
            # Too big for a header: names and kinds only; the categories are in GetModel.
            header = json.dumps([{"name": f.name, "type": _KIND[f.type]} for f in feats], separators=(",", ":"))
            if len(header) > _LAYOUT_MAX_BYTES:
                header = ""
        codes = tuple(
            {**{c.encode(): float(i) for i, c in enumerate(f.categories)}, b"": math.nan}
            if f.type is FeatureType.CATEGORICAL
            else None
            for f in feats
        )
        return cls(
            tuple(f.name for f in feats),
            header,
            tuple(f.type for f in feats),
            tuple(f.required for f in feats),
            {f.name: j for j, f in enumerate(feats)},
            codes,
            INPUT not in {f.name for f in feats},
        )

    def is_tensor(self, inputs: Sequence[pb.ModelInferRequest.InferInputTensor]) -> bool:
        """Whether a request's inputs are in the ``features`` tensor form (else: one input per feature)."""
        if self.tensor_listed:
            return not inputs or any(t.name == INPUT for t in inputs)
        shape = list(inputs[0].shape) if len(inputs) == 1 and inputs[0].name == INPUT else []
        return len(shape) == 2 and shape[1] == len(self.names) > 1

    def inputs_text(self, limit: int = 10) -> str:
        names = ", ".join(repr(n) for n in self.names[:limit]) + (", ..." if len(self.names) > limit else "")
        return (
            f"{INPUT!r} (the whole-row tensor) or one input per feature ({names})"
            if self.tensor_listed
            else f"one input per feature ({names})"
        )


def _version(text: str, field: str) -> int:
    """An OIP version string as our version number; 0 for empty (the champion)."""
    if not text:
        return 0
    version = convert.parse_int64(text)
    if not version:
        raise _bad(field, f"{text[:40]!r} is not a version number (a positive integer, or empty for the champion)")
    return version


class OpenInferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, ctx: AppContext, catalog: Catalog, registry: Registry, inference: Inference, server_version: str
    ) -> None:
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

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
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

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
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
            name=model.name,
            versions=[str(v) for v in sorted(versions)],
            platform=f"sahayak_{family}" if family else "sahayak",
            inputs=[
                *([column(name=INPUT, datatype="FP32", shape=[-1, len(layout.names)])] if layout.tensor_listed else []),
                *(
                    column(name=name, datatype=_ACCEPTS[kind][0], shape=_NAMED_SHAPE)
                    for name, kind in zip(layout.names, layout.kinds, strict=True)
                ),
            ],
            outputs=[
                column(name=PROBABILITY, datatype="FP32", shape=[-1, 1]),
                column(name=LABEL, datatype="INT32", shape=[-1, 1]),
            ],
        )

    # --- inference ------------------------------------------------------------

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        model = self._catalog.get(request.model_name, "model_name")
        version = _version(request.model_version, "model_version")
        layout = self._layout(model)
        wanted = _requested_outputs(request.outputs)
        if layout.is_tensor(request.inputs):
            x = _input_matrix(request, layout)
            # The tensor's layout is the scorer's raw layout: it goes in as it is, checked and logged.
            batch_id, served, probs = self._inference.predict_matrix(model, version, "", x, field=INPUT)
        else:
            x = _named_matrix(request, layout)
            try:
                batch_id, served, probs = self._inference.predict_matrix(model, version, "", x, field=_ROWS)
            except InvalidArgument as exc:
                raise _per_input(exc, layout) from None
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


def _input_matrix(request: pb.ModelInferRequest, layout: Layout) -> np.ndarray:
    """The ``features`` tensor as an ``[n, width]`` array, checked against the model's layout."""
    width = len(layout.names)
    if len(request.inputs) != 1:
        raise _bad(
            "inputs",
            f"the {INPUT!r} tensor (FP32 [n, {width}]) goes alone: this form takes exactly one "
            f"input; got {len(request.inputs)}. Or leave {INPUT!r} out and send one input "
            f"per feature, named as the feature (ModelMetadata lists them)",
        )
    tensor = request.inputs[0]
    dtype = _DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _bad("inputs[0].datatype", f"{tensor.datatype[:16]!r} is not accepted: send FP32 (or FP64)")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != width or shape[0] < 0:
        raise _bad(
            "inputs[0].shape",
            f"{shape} does not match [n, {width}]: one row per prediction, "
            f"the model's {width} features in schema order",
        )
    n = shape[0]
    if n > MAX_BATCH_ROWS:
        raise _bad("inputs[0].shape", f"at most {MAX_BATCH_ROWS} rows per call; got {n}")
    _check_raw_count(request)
    values = _elements(request, 0, n * width)
    assert isinstance(values, np.ndarray)  # FP32 / FP64, never BYTES
    return values.reshape(n, width)


def _check_raw_count(request: pb.ModelInferRequest) -> None:
    raw, count = len(request.raw_input_contents), len(request.inputs)
    if raw and raw != count:
        raise _bad("raw_input_contents", f"has {raw} entries for {count} input{'s' if count != 1 else ''}")


def _elements(request: pb.ModelInferRequest, k: int, count: int) -> np.ndarray | list[bytes]:
    """Input k's ``count`` elements, from ``raw_input_contents[k]`` or from its typed contents: an array
    (BYTES: a list of the elements' bytes). The caller has checked the datatype, and the raw entries' count."""
    tensor = request.inputs[k]
    datatype, shape = tensor.datatype, list(tensor.shape)
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            raise _bad(f"inputs[{k}].contents", "give the elements in raw_input_contents or in contents, not both")
        data = request.raw_input_contents[k]
        if datatype == "BYTES":
            return _split_bytes(data, count, f"raw_input_contents[{k}]")
        dtype = _ELEMENT[datatype]
        if len(data) != count * dtype.itemsize:
            raise _bad(
                f"raw_input_contents[{k}]",
                f"has {len(data)} bytes; shape {shape} of {datatype} needs {count * dtype.itemsize}",
            )
        return np.frombuffer(data, dtype=dtype)
    field = _TYPED_FIELD[datatype]
    contents = tensor.contents
    for other in _TYPED:
        if other != field and len(getattr(contents, other)):
            raise _bad(f"inputs[{k}].contents.{other}", f"a {datatype} tensor's elements go in {field}")
    values = getattr(contents, field)
    if len(values) != count:
        raise _bad(f"inputs[{k}].contents.{field}", f"has {len(values)} elements; shape {shape} needs {count}")
    if datatype == "BYTES":
        return list(values)
    return np.array(values, dtype=_ELEMENT[datatype])  # read in C, not element by element


def _split_bytes(data: bytes, count: int, field: str) -> list[bytes]:
    """V2's raw BYTES: each element as a 4-byte little-endian length, then that many bytes (what
    tritonclient's serialize_byte_tensor writes)."""
    out: list[bytes] = []
    pos, end = 0, len(data)
    for i in range(count):
        if pos + 4 > end:
            raise _bad(field, f"ends ({end} bytes) inside element {i}'s 4-byte length; the shape has {count} elements")
        size = int.from_bytes(data[pos : pos + 4], "little")
        pos += 4
        if pos + size > end:
            raise _bad(field, f"element {i} declares {size} bytes; only {end - pos} are left")
        out.append(data[pos : pos + size])
        pos += size
    if pos != end:
        raise _bad(field, f"has {end - pos} bytes after its {count} elements")
    return out


def _named_matrix(request: pb.ModelInferRequest, layout: Layout) -> np.ndarray:
    """One input per feature, decoded into the raw-layout ``[n, F]`` float64 matrix (schema order;
    a boolean 0/1, a categorical its category's index, NaN missing) that the ``features`` tensor carries."""
    inputs = request.inputs
    if not inputs:
        raise _bad("inputs", f"no inputs: this model takes {layout.inputs_text()}")
    _check_raw_count(request)
    given: dict[int, int] = {}  # column -> input index
    n = -1
    for k, tensor in enumerate(inputs):
        j = layout.column.get(tensor.name)
        if j is None:
            raise _bad(
                f"inputs[{k}].name", f"unknown input {tensor.name[:64]!r}: this model takes {layout.inputs_text()}"
            )
        if j in given:
            raise _bad(f"inputs[{k}].name", f"input {tensor.name!r} is given twice (also inputs[{given[j]}])")
        given[j] = k
        accepts = _ACCEPTS[layout.kinds[j]]
        if tensor.datatype not in accepts:
            kind = _KIND[layout.kinds[j]]
            raise _bad(
                f"inputs[{k}].datatype",
                f"{tensor.datatype[:16]!r} is not accepted for the {kind} feature "
                f"{tensor.name!r}: send {accepts[0]}" + (f" (or {', '.join(accepts[1:])})" if len(accepts) > 1 else ""),
            )
        shape = list(tensor.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
            raise _bad(
                f"inputs[{k}].shape", f"{shape} is not [n, 1] or [n]: input {tensor.name!r} holds one element per row"
            )
        if shape[0] > MAX_BATCH_ROWS:
            raise _bad(f"inputs[{k}].shape", f"at most {MAX_BATCH_ROWS} rows per call; got {shape[0]}")
        if n < 0:
            n = shape[0]
        elif shape[0] != n:
            first = inputs[0]
            raise _bad(
                f"inputs[{k}].shape",
                f"input {tensor.name!r} has {shape[0]} rows and inputs[0] "
                f"({first.name!r}) has {n}: every input holds one element per row",
            )
    missing = [
        FieldError("inputs", f"no input for the required feature {name!r} (send it as {_ACCEPTS[kind][0]} [n, 1])")
        for j, (name, kind, required) in enumerate(zip(layout.names, layout.kinds, layout.required, strict=True))
        if required and j not in given
    ]
    if missing:
        raise InvalidArgument.fields(missing[:_MAX_VALUE_ERRORS])
    x = np.full((n, len(layout.names)), np.nan)
    errors: list[FieldError] = []
    for j, k in given.items():
        values = _elements(request, k, n)
        name = layout.names[j]
        codes = layout.codes[j]
        if codes is not None:
            assert isinstance(values, list)
            column = np.fromiter((codes.get(v, -1.0) for v in values), dtype=np.float64, count=n)
            for i in np.flatnonzero(column == -1.0)[:_MAX_VALUE_ERRORS].tolist():
                errors.append(FieldError(f"{name}[{i}]", _unknown_category(values[i], codes)))
            x[:, j] = column
        else:
            assert isinstance(values, np.ndarray)
            if request.inputs[k].datatype == "BOOL" and n and int(values.max()) > 1:
                i = int(np.argmax(values > 1))
                errors.append(
                    FieldError(
                        f"{name}[{i}]", f"a raw BOOL element is one byte, 0 (false) or 1 (true); got {int(values[i])}"
                    )
                )
            x[:, j] = values
    if errors:
        raise InvalidArgument.fields(errors[:_MAX_VALUE_ERRORS])
    return x


def _unknown_category(value: bytes, codes: dict[bytes, float]) -> str:
    try:
        text: str = repr(value.decode()[:64])
    except UnicodeDecodeError:
        return f"{value[:64]!r} is not UTF-8 text"
    known = [c.decode() for c in codes if c]
    listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    return (
        f"{text} is not one of the declared categories ({listed}); the empty string is missing. A value "
        f"outside them goes through Predict (when the feature allows unknown categories)"
        if known
        else f"{text}: the feature declares no categories, so only the empty string (missing) fits here; "
        f"send other values through Predict"
    )


def _per_input(exc: InvalidArgument, layout: Layout) -> InvalidArgument:
    """predict_matrix's errors, with each cell "rows[i, j] (feature)" named as the input sent: "feature[i]"."""
    renamed = []
    for e in exc.field_errors:
        cell = _CELL.match(e.field)
        renamed.append(FieldError(f"{layout.names[int(cell[2])]}[{cell[1]}]", e.reason) if cell else e)
    return InvalidArgument.fields(renamed, reason=exc.reason) if renamed else exc
