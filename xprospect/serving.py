"""A client for models in TF Serving: X-rays in over REST or gRPC, a HU :class:`Volume` out.

Export a model with ``xprospect export`` (:mod:`xprospect.export`), serve it with TF Serving,
then::

    from xprospect.serving import Client

    client = Client("demo", protocol="grpc", model_card="saved_models/demo/1")
    volume = client.predict(frontal, lateral)      # a canonical HU Volume

What :meth:`Client.predict` sends depends on the signature:

- ``signature="predict_hu"`` (default) or ``"serving_default"``: X-rays already prepared as the
  model saw them, float ``(S, S)`` or ``(S, S, 1)`` in [0, 1], bright = dense
  (:func:`xprospect.inference.prepare_xray`). ``predict_hu`` returns int16 HU (2 bytes a
  voxel); ``serving_default`` returns the float32 normalised volume, un-windowed here with the
  model's HU window.
- ``signature="predict_images"``: raw uint8 or uint16 images ``(H, W)`` or ``(H, W, 1)`` of any
  size; the server pads, resizes and windows them. uint8 is sent as uint16 (the signature's
  dtype; the values are unchanged).

The volume's geometry (canonical orientation, ``fov_mm / S`` mm voxels centred on the origin, as
:func:`xprospect.inference.volume_from_output` builds it) needs the model's HU window and field
of view: pass ``model_card=`` (the exported ``model_card.json`` or its version folder) or
``hu_window=`` / ``fov_mm=``; without them the defaults are the XprospeCT window [-1000, 1000]
HU and 320 mm.

gRPC caps messages a client receives at 4 MiB by default. A 128^3 response is 8 MiB as float32
and 4 MiB plus framing as int16 (and TF Serving writes int16 tensors as varint ``int_val``
fields, 10 bytes for each negative value), so the client raises the limit to ``max_receive_mb``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xprospect.constants import DEFAULT_FOV_MM
from xprospect.errors import ConfigError, XprospectError
from xprospect.image import Volume

__all__ = ["Client", "ServingError", "make_ndarray", "make_tensor_proto"]

Protocol = Literal["grpc", "rest"]
SIGNATURE_OUTPUTS: dict[str, tuple[str, Any]] = {
    "serving_default": ("volume", np.float32),
    "predict_hu": ("hu", np.int16),
    "predict_images": ("hu", np.int16),
}
"""Signature → (output key, output dtype), as :func:`xprospect.export.export_model` writes them."""
DEFAULT_HU_WINDOW = (-1000.0, 1000.0)


class ServingError(XprospectError):
    """The model server could not be reached, or it refused or failed the request."""


# ---------------------------------------------------------------------------------------------
# TensorProto <-> NumPy without TensorFlow ops
# ---------------------------------------------------------------------------------------------
def _dtype_maps() -> tuple[dict[Any, int], dict[int, Any]]:
    from tensorflow.core.framework import types_pb2

    pairs = [
        (np.float32, types_pb2.DT_FLOAT),
        (np.float64, types_pb2.DT_DOUBLE),
        (np.float16, types_pb2.DT_HALF),
        (np.int8, types_pb2.DT_INT8),
        (np.int16, types_pb2.DT_INT16),
        (np.int32, types_pb2.DT_INT32),
        (np.int64, types_pb2.DT_INT64),
        (np.uint8, types_pb2.DT_UINT8),
        (np.uint16, types_pb2.DT_UINT16),
        (np.uint32, types_pb2.DT_UINT32),
        (np.uint64, types_pb2.DT_UINT64),
        (np.bool_, types_pb2.DT_BOOL),
    ]
    return {np.dtype(n): t for n, t in pairs}, {t: np.dtype(n) for n, t in pairs}


def make_tensor_proto(array: np.ndarray) -> Any:
    """A ``tensorflow.TensorProto`` holding ``array`` as raw ``tensor_content`` bytes.

    Args:
        array: A numeric NumPy array of any shape.

    Returns:
        The proto (dtype, shape and the array's bytes in little-endian order).

    Raises:
        ConfigError: A dtype TensorFlow Serving has no raw encoding for.
    """
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    to_tf, _ = _dtype_maps()
    a = np.asarray(array)
    native = np.dtype(a.dtype.name)  # byte order aside
    if native not in to_tf:
        raise ConfigError(f"cannot send a {a.dtype} array to TF Serving")
    # TensorFlow reads tensor_content in little-endian order.
    a = np.ascontiguousarray(a, dtype=native.newbyteorder("<"))
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in a.shape]
    )
    return tensor_pb2.TensorProto(
        dtype=to_tf[native], tensor_shape=shape, tensor_content=a.tobytes()
    )


_VALUE_FIELDS = {
    "float32": "float_val",
    "float64": "double_val",
    "float16": "half_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
}


def make_ndarray(proto: Any) -> np.ndarray:
    """The NumPy array in a ``TensorProto``, from ``tensor_content`` or the typed value fields.

    TF Serving fills the typed fields (``float_val``, ``int_val``, ...) by default; a value
    list shorter than the shape repeats its last value, as TensorFlow reads it.

    Raises:
        ServingError: An unsupported dtype, or contents that do not match the shape.
    """
    _, from_tf = _dtype_maps()
    if proto.dtype not in from_tf:
        raise ServingError(f"unsupported tensor dtype enum {proto.dtype} in the response")
    dtype = from_tf[proto.dtype]
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    size = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<"))
        if flat.size != size:
            raise ServingError(f"tensor_content holds {flat.size} values for shape {shape}")
        return flat.astype(dtype).reshape(shape)
    field = _VALUE_FIELDS[dtype.name]
    values = getattr(proto, field)
    if dtype == np.float16:  # half_val holds the bit patterns
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.asarray(values, dtype=dtype)
    if flat.size == size:
        return flat.reshape(shape)
    if flat.size == 0:
        return np.zeros(shape, dtype=dtype)
    if flat.size < size:
        return np.concatenate([flat, np.full(size - flat.size, flat[-1], dtype)]).reshape(shape)
    raise ServingError(f"{field} holds {flat.size} values for shape {shape}")


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------
def _card_facts(
    model_card: str | os.PathLike[str] | Mapping[str, Any], *, trust: bool
) -> dict[str, Any]:
    if isinstance(model_card, Mapping):
        return dict(model_card)
    from xprospect.export import read_model_card
    from xprospect.trust import SAVED_MODEL_FILE, verify_saved_model

    path = Path(model_card)
    folder = path if path.is_dir() else path.parent
    if (folder / SAVED_MODEL_FILE).exists():
        # The export the server runs: verified like a model loaded in process.
        card = verify_saved_model(folder, trust=trust)
        if card:
            return card
    return read_model_card(folder)


class Client:
    """Sends X-rays to a model in TF Serving and returns the reconstructed CT.

    Args:
        model_name: The model's name in TF Serving (``xprospect export --name``).
        host: Server host.
        protocol: ``"grpc"`` (port ``grpc_port``, TF Serving's 8500) or ``"rest"`` (port
            ``rest_port``, 8501).
        grpc_port: gRPC port.
        rest_port: REST port.
        signature: ``"predict_hu"``, ``"serving_default"`` or ``"predict_images"`` (see the
            module docstring for what each takes).
        max_receive_mb: gRPC receive limit in MiB (gRPC's default is 4).
        timeout_s: Per-request deadline in seconds.
        version: A model version to ask for; None: the one the server serves (its latest).
        hu_window: The model's HU window; default the model card's, else [-1000, 1000].
        fov_mm: Field of view of the output cube; default the model card's, else 320 mm.
        model_card: ``model_card.json`` (or its version folder, or its dict) of the served
            model, for ``hu_window``, ``fov_mm`` and the views. Where the folder holds the
            SavedModel, it is verified first, as :func:`xprospect.inference.load_predictor`
            verifies a model (:func:`xprospect.trust.check_saved_model`).
        trust: Accept a ``model_card`` folder whose SavedModel fails the check (a warning says
            so). Only for models from a source you trust.

    Raises:
        ConfigError: Unknown protocol or signature, or a non-positive limit.
        MissingDataError: ``model_card`` is given but unreadable.
        UntrustedModelError: ``model_card``'s SavedModel is not a verified xprospect export and
            ``trust`` is False.
    """

    def __init__(
        self,
        model_name: str,
        *,
        host: str = "127.0.0.1",
        protocol: Protocol = "grpc",
        grpc_port: int = 8500,
        rest_port: int = 8501,
        signature: str = "predict_hu",
        max_receive_mb: float = 64,
        timeout_s: float = 60,
        version: int | None = None,
        hu_window: Sequence[float] | str | None = None,
        fov_mm: float | None = None,
        model_card: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        trust: bool = False,
    ) -> None:
        from xprospect.preprocessing import resolve_hu_window

        if protocol not in ("grpc", "rest"):
            raise ConfigError(f"protocol must be 'grpc' or 'rest', got {protocol!r}")
        if signature not in SIGNATURE_OUTPUTS:
            raise ConfigError(
                f"signature must be one of {sorted(SIGNATURE_OUTPUTS)}, got {signature!r}"
            )
        if max_receive_mb <= 0 or timeout_s <= 0:
            raise ConfigError("max_receive_mb and timeout_s must be positive")
        card = _card_facts(model_card, trust=trust) if model_card is not None else {}
        self.model_name = model_name
        self.host = host
        self.protocol: Protocol = protocol
        self.grpc_port = int(grpc_port)
        self.rest_port = int(rest_port)
        self.signature = signature
        self.max_receive_bytes = int(max_receive_mb * 2**20)
        self.timeout_s = float(timeout_s)
        self.version = version
        self.hu_window = resolve_hu_window(
            hu_window if hu_window is not None else card.get("hu_window", DEFAULT_HU_WINDOW)
        )
        self.fov_mm = float(fov_mm if fov_mm is not None else card.get("fov_mm", DEFAULT_FOV_MM))
        self.views: tuple[str, ...] | None = tuple(card["views"]) if "views" in card else None
        self._channel: Any = None
        self._stub: Any = None

    # --- public ---

    @property
    def address(self) -> str:
        """``host:port`` for the chosen protocol."""
        port = self.grpc_port if self.protocol == "grpc" else self.rest_port
        return f"{self.host}:{port}"

    def predict(self, frontal: np.ndarray, lateral: np.ndarray | None = None) -> Volume:
        """Reconstructs one CT.

        Args:
            frontal: The frontal X-ray: float ``(S, S)`` / ``(S, S, 1)`` in [0, 1] for
                ``serving_default`` and ``predict_hu``; uint8/uint16 ``(H, W)`` / ``(H, W, 1)``
                for ``predict_images``.
            lateral: The lateral X-ray, same kind, for biplanar models.

        Returns:
            A canonical HU volume ``(S, S, S)`` centred on the origin with ``fov_mm / S`` mm
            voxels: int16 for ``predict_hu`` / ``predict_images``, float32 for
            ``serving_default``.

        Raises:
            ConfigError: Inputs of the wrong kind or shape for the signature, or a view the
                model (per its model card) does not take.
            ServingError: The server is unreachable or refused the request.
        """
        images = {"frontal": frontal}
        if lateral is not None:
            images["lateral"] = lateral
        if self.views is not None and set(images) != set(self.views):
            raise ConfigError(
                f"model {self.model_name!r} takes {list(self.views)}, got {sorted(images)}"
            )
        batch = {v: self._prepare(v, a)[None] for v, a in images.items()}
        out = self.predict_arrays(batch)[0]
        source = f"{self.protocol}://{self.address}/{self.model_name}:{self.signature}"
        if self.signature == "serving_default":
            from xprospect.inference import volume_from_output

            vol = volume_from_output(out, self.hu_window, self.fov_mm)
            return vol.replace(source=source)
        if out.ndim != 3 or len(set(out.shape)) != 1:
            raise ServingError(f"expected a cube (S, S, S) from {source}, got {out.shape}")
        return Volume.from_spacing(out, self.fov_mm / out.shape[0], source=source)

    def predict_arrays(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Sends a batch as it is; returns the signature's output batch.

        Args:
            inputs: ``{"frontal": (B, ...), ["lateral": (B, ...)]}`` in the signature's dtype
                and shape (``(B, S, S, 1)`` float32, or ``(B, H, W)`` uint16).

        Returns:
            ``(B, S, S, S, 1)`` float32 for ``serving_default``, ``(B, S, S, S)`` int16
            otherwise.

        Raises:
            ServingError: The server is unreachable or refused the request.
        """
        if self.protocol == "rest":
            return self._predict_rest(inputs)
        return self._predict_grpc(inputs)

    def close(self) -> None:
        """Closes the gRPC channel (a new one opens on the next request)."""
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inputs ---

    def _prepare(self, view: str, image: np.ndarray) -> np.ndarray:
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise ConfigError(f"{view} must be one image (H, W) or (H, W, 1), got {a.shape}")
        if self.signature == "predict_images":
            if a.dtype not in (np.uint8, np.uint16):
                raise ConfigError(
                    f"predict_images takes raw uint8/uint16 images; {view} is {a.dtype} "
                    "(send prepared float X-rays with signature='predict_hu')"
                )
            return a.astype(np.uint16)
        if a.dtype.kind != "f":
            raise ConfigError(
                f"{self.signature} takes X-rays prepared to float [0, 1] "
                f"(xprospect.inference.prepare_xray); {view} is {a.dtype} "
                "(send raw images with signature='predict_images')"
            )
        if a.shape[0] != a.shape[1]:
            raise ConfigError(f"{view} must be square (S, S) for {self.signature}, got {a.shape}")
        return a.astype(np.float32)[..., None]

    # --- REST ---

    def _rest_url(self) -> str:
        version = f"/versions/{int(self.version)}" if self.version is not None else ""
        return f"http://{self.address}/v1/models/{self.model_name}{version}:predict"

    def _predict_rest(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        key, dtype = SIGNATURE_OUTPUTS[self.signature]
        body = {
            "signature_name": self.signature,
            "inputs": {v: np.asarray(a).tolist() for v, a in inputs.items()},
        }
        url = self._rest_url()
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServingError(f"HTTP {exc.code}: {_rest_error(exc)}", url) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServingError(f"cannot reach TF Serving's REST API: {reason}", url) from exc
        except ValueError as exc:
            raise ServingError(f"response is not JSON: {exc}", url) from exc
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        if outputs is None:
            raise ServingError("response has no 'outputs'", url)
        if isinstance(outputs, dict):  # several outputs: a dict by name; one output: the value
            if key not in outputs:
                raise ServingError(f"response has outputs {sorted(outputs)}, not {key!r}", url)
            outputs = outputs[key]
        return np.asarray(outputs, dtype=dtype)

    # --- gRPC ---

    def _grpc_stub(self) -> Any:
        if self._stub is None:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            self._channel = grpc.insecure_channel(
                self.address,
                options=[
                    ("grpc.max_receive_message_length", self.max_receive_bytes),
                    ("grpc.max_send_message_length", self.max_receive_bytes),
                ],
            )
            self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        return self._stub

    def _predict_grpc(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        import grpc
        from tensorflow_serving.apis import predict_pb2

        key, _ = SIGNATURE_OUTPUTS[self.signature]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        for view, array in inputs.items():
            request.inputs[view].CopyFrom(make_tensor_proto(np.asarray(array)))
        where = f"grpc://{self.address}/{self.model_name}"
        try:
            response = self._grpc_stub().Predict(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            name = getattr(code, "name", "ERROR")
            raise ServingError(f"{name}: {detail}", where) from exc
        if key in response.outputs:
            return make_ndarray(response.outputs[key])
        if len(response.outputs) == 1:
            return make_ndarray(next(iter(response.outputs.values())))
        raise ServingError(f"response has outputs {sorted(response.outputs)}, not {key!r}", where)


def _rest_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode(errors="replace")
    except OSError:
        return str(exc.reason)
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip().splitlines()[0] if body.strip() else str(exc.reason)
    return str(data.get("error", body)) if isinstance(data, dict) else body
