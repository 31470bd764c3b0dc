"""A loopback TEST DOUBLE of TF Serving, for tests only. It is NOT TF Serving.

No TF Serving binary (``tensorflow_model_server``) can be installed where the tests run, so the
tests of :class:`xprospect.serving.Client` talk to this stand-in instead. It loads exported
SavedModels with ``tf.saved_model.load`` in the test's own process and answers the two APIs
the client uses, on free ports of 127.0.0.1:

- gRPC ``tensorflow.serving.PredictionService/Predict`` (the ``tensorflow_serving.apis`` protos
  and service stubs), and
- REST ``POST /v1/models/NAME[/versions/N]:predict`` with the ``"inputs"`` (columnar) or
  ``"instances"`` (row) JSON formats, plus ``GET /v1/models/NAME`` for the version status.

It mimics what a client can observe of TF Serving's replies: responses carry typed value
fields (``float_val``, ``int_val``) by default, as TF Serving's default ``AsProtoField``
serialisation does (``serialization="content"`` sends raw ``tensor_content`` instead), a
single output is returned unnamed under ``"outputs"`` in REST, input dtypes must match the
signature, and errors come back as gRPC status codes or ``{"error": ...}`` bodies. It does not
batch, queue, hot-reload versions, read ``models.config`` or replay warmup requests, and it
shares the test's threads and memory: passing against it says the client speaks the protocol,
not that TF Serving will load the model (the ``saved_model_cli`` and fresh-process tests cover
the SavedModel itself).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["ServingDouble"]

_REST_PREDICT = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_REST_STATUS = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?$")
_FIELDS = {
    "float32": "float_val",
    "float64": "double_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "bool": "bool_val",
}


class _RequestError(Exception):
    def __init__(self, message: str, grpc_code: str = "INVALID_ARGUMENT", http: int = 400):
        super().__init__(message)
        self.grpc_code = grpc_code
        self.http = http


def as_proto_field(array: np.ndarray) -> Any:
    """``TensorProto`` with typed value fields, like TensorFlow's ``Tensor::AsProtoField``."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    a = np.asarray(array)
    proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(a.dtype).as_datatype_enum)
    for s in a.shape:
        proto.tensor_shape.dim.add(size=int(s))
    getattr(proto, _FIELDS[a.dtype.name]).extend(a.ravel().tolist())
    return proto


class ServingDouble:
    """Serves SavedModels over gRPC and REST on 127.0.0.1 (a test double of TF Serving).

    Args:
        models: Model name → base path (the ``NAME`` folder holding version folders). Every
            version found is loaded; requests without a version get the highest.
        serialization: ``"field"`` (TF Serving's default: ``float_val``/``int_val``) or
            ``"content"`` (raw ``tensor_content``) for gRPC responses.

    Use as a context manager; ``grpc_port`` and ``rest_port`` are set once it has started.
    """

    def __init__(
        self,
        models: Mapping[str, str | Path],
        *,
        serialization: Literal["field", "content"] = "field",
    ) -> None:
        import tensorflow as tf

        self.serialization = serialization
        self.models: dict[str, dict[int, Any]] = {}
        for name, base in models.items():
            versions = sorted(
                int(p.name) for p in Path(base).iterdir() if p.is_dir() and p.name.isdigit()
            )
            if not versions:
                raise FileNotFoundError(f"{base}: no version folders")
            self.models[name] = {v: tf.saved_model.load(str(Path(base) / str(v))) for v in versions}
        self.grpc_port = 0
        self.rest_port = 0
        self.requests: list[tuple[str, str, str]] = []  # (protocol, model, signature)
        self._grpc: Any = None
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- the model side, shared by both protocols ---

    def _signature(self, name: str, version: int | None, signature: str) -> tuple[Any, int]:
        if name not in self.models:
            raise _RequestError(f"Servable not found for request: Latest({name})", "NOT_FOUND", 404)
        versions = self.models[name]
        number = max(versions) if version is None else version
        if number not in versions:
            raise _RequestError(
                f"Servable not found for request: Specific({name}, {number})", "NOT_FOUND", 404
            )
        loaded = versions[number]
        if signature not in loaded.signatures:
            raise _RequestError(f'Serving signature name: "{signature}" not found in signature def')
        return loaded.signatures[signature], number

    def run(
        self, protocol: str, name: str, version: int | None, signature: str, inputs: dict
    ) -> tuple[dict[str, np.ndarray], int]:
        """Runs one request: checks input names and dtypes against the signature, calls it."""
        import tensorflow as tf

        signature = signature or "serving_default"
        fn, number = self._signature(name, version, signature)
        specs = fn.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise _RequestError(
                f"input size does not match signature: {len(inputs)}!={len(specs)} "
                f"len({sorted(inputs)}) != len({sorted(specs)})"
            )
        tensors = {}
        for key, value in inputs.items():
            want = specs[key].dtype.as_numpy_dtype
            if isinstance(value, np.ndarray):
                if value.dtype != want:
                    raise _RequestError(
                        f"Expects arg[{key}] to be {np.dtype(want).name} but "
                        f"{value.dtype.name} is provided"
                    )
                tensors[key] = tf.constant(value)
            else:  # JSON: TF Serving parses numbers as the signature's dtype
                tensors[key] = tf.constant(np.asarray(value, dtype=want))
        try:
            outputs = fn(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise _RequestError(str(exc).strip().splitlines()[0]) from exc
        self.requests.append((protocol, name, signature))
        return {k: v.numpy() for k, v in outputs.items()}, number

    # --- gRPC ---

    def _servicer(self) -> Any:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        double = self

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
            def Predict(self, request: Any, context: Any) -> Any:
                spec = request.model_spec
                version = spec.version.value if spec.HasField("version") else None
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                try:
                    outputs, number = double.run(
                        "grpc", spec.name, version, spec.signature_name, inputs
                    )
                except _RequestError as exc:
                    context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))
                response = predict_pb2.PredictResponse()
                response.model_spec.name = spec.name
                response.model_spec.version.value = number
                response.model_spec.signature_name = spec.signature_name or "serving_default"
                for key, value in outputs.items():
                    proto = (
                        as_proto_field(value)
                        if double.serialization == "field"
                        else tf.make_tensor_proto(value)
                    )
                    response.outputs[key].CopyFrom(proto)
                return response

        return Servicer()

    # --- REST ---

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's output clean

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                m = _REST_STATUS.match(self.path)
                if not m or m.group(1) not in double.models:
                    self._reply(404, {"error": f"Could not find any versions of {self.path}"})
                    return
                versions = sorted(double.models[m.group(1)], reverse=True)
                status = {"error_code": "OK", "error_message": ""}
                self._reply(
                    200,
                    {
                        "model_version_status": [
                            {"version": str(v), "state": "AVAILABLE", "status": status}
                            for v in versions
                        ]
                    },
                )

            def do_POST(self) -> None:
                m = _REST_PREDICT.match(self.path)
                if not m:
                    self._reply(404, {"error": f"Malformed request: POST {self.path}"})
                    return
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    row_format = "instances" in body
                    inputs = _columnar(body)
                    version = int(m.group(2)) if m.group(2) else None
                    outputs, _ = double.run(
                        "rest", m.group(1), version, body.get("signature_name", ""), inputs
                    )
                except _RequestError as exc:
                    self._reply(exc.http, {"error": str(exc)})
                    return
                except (ValueError, KeyError, TypeError) as exc:
                    self._reply(400, {"error": f"JSON Parse error: {exc}"})
                    return
                values = {k: v.tolist() for k, v in outputs.items()}
                if row_format:
                    self._reply(200, {"predictions": _rows(values)})
                elif len(values) == 1:
                    self._reply(200, {"outputs": next(iter(values.values()))})
                else:
                    self._reply(200, {"outputs": values})

        return Handler

    # --- lifecycle ---

    def start(self) -> ServingDouble:
        """Starts both servers on free ports of 127.0.0.1."""
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        # TF Serving accepts messages up to 2 GiB; so does the double.
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2),
            options=[
                ("grpc.max_receive_message_length", 2**31 - 1),
                ("grpc.max_send_message_length", 2**31 - 1),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            self._servicer(), self._grpc
        )
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.rest_port = int(self._http.server_address[1])
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops both servers."""
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> ServingDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _columnar(body: dict) -> dict[str, Any]:
    """The request's inputs as ``{name: nested list}`` from either JSON format."""
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict):
            raise _RequestError("inputs must be an object of named inputs for these signatures")
        return inputs
    if "instances" in body:
        rows = body["instances"]
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise _RequestError("instances must be a list of objects of named inputs")
        return {k: [r[k] for r in rows] for k in rows[0]}
    raise _RequestError("Missing 'inputs' or 'instances' key")


def _rows(values: dict[str, list]) -> list:
    keys = list(values)
    n = len(values[keys[0]])
    if len(keys) == 1:
        return values[keys[0]]
    return [{k: values[k][i] for k in keys} for i in range(n)]
