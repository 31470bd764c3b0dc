"""Which model files xprospect runs: a model is a program, so nothing is trusted by default.

A ``.keras`` file is loaded with Keras's safe mode, which refuses Python lambdas (and the
arbitrary code that comes with them) in its config. A SavedModel is a graph of TensorFlow ops
that run when the model is loaded or called, and ops can read and write files
(``ReadFile``, ``WriteFile``, ``SaveV2``), print (``PrintV2``) or call back into Python
(``PyFunc``); nothing in TensorFlow refuses them. :func:`check_saved_model` reads
``saved_model.pb`` as a protobuf, before anything is loaded or run, and accepts a SavedModel
only when

- every op of its graph and of every function in its function library is on
  :data:`ALLOWED_OPS`, the ops xprospect's own exports contain (measured with
  ``scripts/export_op_inventory.py`` over every preset); the checkpoint ops that save and
  restore the variables (:data:`SAVE_OPS`, :data:`RESTORE_OPS`) only inside the save and the
  restore function the SavedModel's ``saver_def`` names, on the path the loader passes in;
- it is an xprospect export: one ``serve`` MetaGraph, its ``model_card.json``
  (:mod:`xprospect.export` writes it) and the signatures of :data:`EXPECTED_SIGNATURES` with the
  card's views, size and dtypes;
- its object graph holds only the plain TensorFlow object kinds an export holds.

``trust=True`` (``--trust-model`` on the command line) loads a model that fails these checks,
with an :class:`UnverifiedModelWarning` naming what failed; for a ``.keras`` file it turns safe
mode off. ``SECURITY.md`` at the repository root explains the policy and why it is an allow-list.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xprospect.constants import VIEW_SETS
from xprospect.errors import ResourceLimitError, UntrustedModelError
from xprospect.utils import read_json_file

__all__ = [
    "ALLOWED_OPS",
    "CHECKPOINT_OPS",
    "EXPECTED_SIGNATURES",
    "MODEL_CARD_FILE",
    "OVERRIDE_HINT",
    "REFUSED_OPS",
    "RESTORE_OPS",
    "SAVED_MODEL_FILE",
    "SAVE_OPS",
    "GraphOps",
    "UnverifiedModelWarning",
    "check_saved_model",
    "graph_ops",
    "load_keras_model",
    "verify_saved_model",
]

MODEL_CARD_FILE = "model_card.json"
"""The model card :func:`xprospect.export.export_model` writes beside ``saved_model.pb``."""
SAVED_MODEL_FILE = "saved_model.pb"
SERVE_TAG = "serve"
PREDICT_METHOD = "tensorflow/serving/predict"
INIT_OP_SIGNATURE = "__saved_model_init_op"
MAX_CARD_BYTES = 1 << 20
"""A model card is a few KiB; a bigger file is not one (and is not read)."""

EXPECTED_SIGNATURES: dict[str, tuple[str, str, str]] = {
    "serving_default": ("float32", "volume", "float32"),
    "predict_hu": ("float32", "hu", "int16"),
    "predict_images": ("uint16", "hu", "int16"),
}
"""Signature → (input dtype, output key, output dtype) of every xprospect export
(:data:`xprospect.export.SIGNATURES`; a test holds the two equal)."""

OVERRIDE_HINT = "load it only if you trust its source: --trust-model (trust=True in Python)"

ALLOWED_OPS: frozenset[str] = frozenset(
    {
        # The graph around the functions: inputs, variables, function calls.
        "AssignVariableOp",
        "Const",
        "Identity",
        "NoOp",
        "PartitionedCall",  # StatefulPartitionedCall's twin; the callee is checked like any
        "Placeholder",
        "ReadVariableOp",
        "StatefulPartitionedCall",
        "VarHandleOp",
        "VarIsInitializedOp",
        # Tensor computation: what the exports of every preset contain (both view sets,
        # float32 and mixed precision), measured by scripts/export_op_inventory.py.
        "AddV2",
        "Assert",
        "AvgPool",
        "AvgPool3D",
        "BatchMatMulV2",
        "BiasAdd",
        "BroadcastTo",
        "Cast",
        "ConcatV2",
        "Conv2D",
        "Conv3D",
        "Conv3DBackpropInputV2",
        "DepthwiseConv2dNative",
        "Einsum",
        "Equal",
        "Erfc",
        "Exp",
        "ExpandDims",
        "Floor",
        "FloorDiv",
        "GatherV2",
        "Greater",
        "LeakyRelu",
        "Less",
        "Log",
        "LogicalAnd",
        "LogicalOr",
        "MatMul",
        "MaxPool",
        "MaxPool3D",
        "Maximum",
        "Mean",
        "Min",
        "Minimum",
        "Mul",
        "Neg",
        "Pack",
        "Pad",
        "Pow",
        "Prod",
        "Range",
        "Rank",
        "RealDiv",
        "Relu",
        "Reshape",
        "Round",
        "Rsqrt",
        "ScatterNd",
        "SelectV2",
        "Selu",
        "Shape",
        "Sigmoid",
        "Softmax",
        "Sqrt",
        "Square",
        "SquaredDifference",
        "Squeeze",
        "StopGradient",
        "StridedSlice",
        "Sub",
        "Sum",
        "Tile",
        "TopKV2",
        "Transpose",
        "ZerosLike",
        # XctDiff's pipeline: the quantiser's nearest code, the straight-through estimator's
        # custom gradient, the sinusoidal time embedding and the sampler's seeded (stateless)
        # noise as Keras draws it (measured by scripts/export_op_inventory.py).
        "ArgMin",
        "Bitcast",
        "BitwiseAnd",
        "Cos",
        "FloorMod",
        "IdentityN",
        "Sin",
        "StatelessRandomGetKeyCounter",
        "StatelessRandomNormalV2",
        # Pure ops of the saver's save function (reading variables, choosing a path).
        "DisableCopyOnRead",
        "Select",
    }
)
"""Ops a verified SavedModel may contain anywhere: pure tensor computation and variable reads.
No op here touches a file, the network, a log or Python."""

SAVE_OPS: frozenset[str] = frozenset(
    {"MergeV2Checkpoints", "SaveV2", "ShardedFilename", "StaticRegexFullMatch", "StringJoin"}
)
"""Ops allowed only inside the ``saver_def``'s save function (run by nothing that loads a
model; ``tf.compat.v1`` savers call it)."""
RESTORE_OPS: frozenset[str] = frozenset({"RestoreV2"})
"""Ops allowed only inside the ``saver_def``'s restore function (TF Serving restores the variables
through it; Python's loader restores them itself)."""
CHECKPOINT_OPS: frozenset[str] = SAVE_OPS | RESTORE_OPS
"""Ops allowed only inside the ``saver_def``'s save and restore functions."""
_CHECKPOINT_PATH_INPUTS: dict[str, tuple[int, ...]] = {
    "RestoreV2": (0,),
    "SaveV2": (0,),
    "MergeV2Checkpoints": (0, 1),
    "ShardedFilename": (0,),
}

_FILE_OPS = [
    "ReadFile",
    "WriteFile",
    "MatchingFiles",
    "Save",
    "SaveSlices",
    "SaveV2",
    "Restore",
    "RestoreSlice",
    "RestoreV2",
    "MergeV2Checkpoints",
    "ImmutableConst",
    "WholeFileReader",
    "WholeFileReaderV2",
    "TFRecordReaderV2",
    "TextLineReaderV2",
    "FixedLengthRecordReaderV2",
    "ReaderReadV2",
    "TFRecordDataset",
    "TextLineDataset",
    "FixedLengthRecordDataset",
    "SaveDataset",
    "SaveDatasetV2",
    "LoadDataset",
    "SnapshotDatasetV2",
    "InitializeTableFromTextFileV2",
    "LoadAndRemapMatrix",
    "DecodeProtoV2",
    "CreateSummaryFileWriter",
    "DebugIdentityV2",
    "DebugIdentityV3",
]
_PRINT_OPS = [
    "Print",
    "PrintV2",
    "WriteSummary",
    "WriteScalarSummary",
    "WriteHistogramSummary",
    "WriteImageSummary",
    "WriteAudioSummary",
    "WriteRawProtoSummary",
    "WriteGraphSummary",
    "DebugIdentity",
    "DebugNumericSummary",
]
_PYTHON_OPS = ["PyFunc", "PyFuncStateless", "EagerPyFunc"]
REFUSED_OPS: dict[str, str] = {
    **{op: "reads or writes files" for op in _FILE_OPS},
    **{op: "prints or logs" for op in _PRINT_OPS},
    **{op: "runs Python code" for op in _PYTHON_OPS},
}
"""Known-dangerous ops and what they do, for the refusal message. Refusal does not depend on
this table: any op off :data:`ALLOWED_OPS` is refused."""

_USER_OBJECTS = frozenset(
    {
        "_generic_user_object",
        "signature_map",
        "trackable_dict_wrapper",
        "trackable_list_wrapper",
        "trackable_tuple_wrapper",
    }
)
_OBJECT_KINDS = frozenset(
    {
        "user_object",
        "variable",
        "function",
        "bare_concrete_function",
        # A tensor one traced function hands another (XctDiff's sampler calls its networks
        # inside its own trace); the loader gets it by calling that function, whose ops are
        # checked like every other function's.
        "captured_tensor",
    }
)
_FUNCTION_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")


class UnverifiedModelWarning(UserWarning):
    """A model was loaded with ``trust=True`` although it could not be verified."""


# ---------------------------------------------------------------------------------------------
# Reading the graph
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphOps:
    """The op types of one MetaGraph, by where they occur.

    Attributes:
        graph: Op types of the top-level graph's nodes.
        functions: Function name → op types of its nodes (every function of the library).
        checkpoint_functions: The functions the ``saver_def`` calls (save and restore).
    """

    graph: frozenset[str]
    functions: dict[str, frozenset[str]]
    checkpoint_functions: frozenset[str]

    def all_ops(self) -> frozenset[str]:
        """Every op type anywhere."""
        return self.graph.union(*self.functions.values())

    def serving_ops(self) -> frozenset[str]:
        """Op types outside the checkpoint functions."""
        return self.graph.union(
            *(ops for name, ops in self.functions.items() if name not in self.checkpoint_functions)
        )


def _read_saved_model(path: Path) -> Any:
    """The ``SavedModel`` protobuf of a folder, parsed (nothing loaded or run)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / SAVED_MODEL_FILE
    if not pb.is_file():
        raise UntrustedModelError(f"no {SAVED_MODEL_FILE} to verify; {OVERRIDE_HINT}", path)
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except (DecodeError, OSError, ValueError) as exc:
        raise UntrustedModelError(
            f"{SAVED_MODEL_FILE} is not a readable SavedModel ({exc}); {OVERRIDE_HINT}", path
        ) from exc
    return proto


def _node_name(ref: str) -> str:
    """``"^name"``, ``"name:0"`` or ``"name:out:0"`` → ``"name"``."""
    return ref.lstrip("^").split(":")[0]


def _called(node: Any) -> Iterator[str]:
    """Names of the functions a node calls through its attributes (nested ones included)."""
    todo = list(node.attr.values())
    while todo:
        value = todo.pop()
        funcs = [value.func] if value.HasField("func") else []
        for func in [*funcs, *value.list.func]:
            yield func.name
            todo.extend(func.attr.values())


def _saver_nodes(meta_graph: Any) -> dict[str, Any]:
    saver = meta_graph.saver_def
    names = {_node_name(saver.save_tensor_name), _node_name(saver.restore_op_name)} - {""}
    return {n.name: n for n in meta_graph.graph_def.node if n.name in names}


def _checkpoint_functions(meta_graph: Any) -> dict[str, frozenset[str]]:
    """The saver's save and restore functions → the checkpoint ops each may use.

    A function qualifies when one saver node calls it and nothing else does (a function that
    also serves, or that both saver nodes call, gets no checkpoint ops).
    """
    saver = meta_graph.saver_def
    roles = {
        _node_name(saver.save_tensor_name): SAVE_OPS,
        _node_name(saver.restore_op_name): RESTORE_OPS,
    }
    nodes = {n.name: n for n in meta_graph.graph_def.node}
    found: dict[str, frozenset[str]] = {}
    for node_name, extra in roles.items():
        node = nodes.get(node_name)
        if node is None or node.op not in _FUNCTION_CALL_OPS:
            continue
        name = node.attr["f"].func.name
        found[name] = frozenset() if name in found else extra
    callers = [n for n in meta_graph.graph_def.node if n.name not in roles]
    callers += [node for f in meta_graph.graph_def.library.function for node in f.node_def]
    elsewhere = {name for node in callers for name in (*_called(node), node.op)}
    return {name: extra for name, extra in found.items() if extra and name not in elsewhere}


def graph_ops(path: str | os.PathLike[str]) -> list[GraphOps]:
    """The op types of each MetaGraph of a SavedModel folder, read without loading it.

    Raises:
        UntrustedModelError: No ``saved_model.pb``, or one that does not parse.
    """
    proto = _read_saved_model(Path(path))
    out = []
    for meta_graph in proto.meta_graphs:
        library = meta_graph.graph_def.library.function
        out.append(
            GraphOps(
                graph=frozenset(n.op for n in meta_graph.graph_def.node),
                functions={f.signature.name: frozenset(n.op for n in f.node_def) for f in library},
                checkpoint_functions=frozenset(_checkpoint_functions(meta_graph)),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------
def _op_problem(op: str, where: str) -> str:
    what = REFUSED_OPS.get(op)
    kind = f"op {op} ({what})" if what else f"op {op}, which xprospect's exports never contain"
    return f"{where} uses {kind}"


def _depends_on(function: Any, ref: str, arg: str) -> bool:
    """Whether input ``ref`` of a node of ``function`` is computed from its argument ``arg``."""
    nodes = {n.name: n for n in function.node_def}
    seen: set[str] = set()
    todo = [_node_name(ref)]
    while todo:
        name = todo.pop()
        if name == arg:
            return True
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        todo.extend(_node_name(r) for r in nodes[name].input if not r.startswith("^"))
    return False


def _graph_problem(meta_graph: Any) -> str | None:
    """What is wrong with the ops of one MetaGraph, or None.

    Every node is looked at; a known-dangerous op (:data:`REFUSED_OPS`) or a call of something
    outside the library is reported before an op that is merely unknown.
    """
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    checkpoint = _checkpoint_functions(meta_graph)
    problems: list[tuple[int, str]] = []  # (0: dangerous, 1: unknown, message)

    def check_node(node: Any, allowed: frozenset[str], where: str) -> None:
        for name in _called(node):
            if name not in library:
                problems.append(
                    (0, f"{where} calls {name!r}, which is not a function of the model")
                )
        if node.op not in library and node.op not in allowed:
            problems.append((0 if node.op in REFUSED_OPS else 1, _op_problem(node.op, where)))

    from tensorflow.python.framework import op_def_registry

    for name in library:
        if op_def_registry.get(name) is not None:
            problems.append((0, f"function {name} is named like TensorFlow's op {name}"))
    for node in meta_graph.graph_def.node:
        check_node(node, ALLOWED_OPS, "the graph")
    filename = _node_name(meta_graph.saver_def.filename_tensor_name)
    for node in _saver_nodes(meta_graph).values():
        if not node.input or _node_name(node.input[0]) != filename:
            problems.append(
                (0, f"the graph's saver node {node.name} does not take the saver's filename")
            )
    for name, function in library.items():
        extra = checkpoint.get(name, frozenset())
        args = function.signature.input_arg
        for node in function.node_def:
            check_node(node, ALLOWED_OPS | extra, f"function {name}")
            if node.op not in extra or node.op not in _CHECKPOINT_PATH_INPUTS:
                continue
            for i in _CHECKPOINT_PATH_INPUTS[node.op]:
                ref = node.input[i] if i < len(node.input) else ""
                if not args or not _depends_on(function, ref, args[0].name):
                    problems.append(
                        (
                            0,
                            f"function {name} uses op {node.op} on a path not given by the "
                            "loader (reads or writes files)",
                        )
                    )
    if not problems:
        return None
    return min(problems, key=lambda p: p[0])[1]


def _object_problem(meta_graph: Any) -> str | None:
    graph_ops = {n.name: n.op for n in meta_graph.graph_def.node}
    for i, node in enumerate(meta_graph.object_graph_def.nodes):
        kind = node.WhichOneof("kind")
        if kind == "constant":
            # A tensor a layer converted once and its traced calls capture (the
            # back-projection layer's sampling tables): data, allowed only as a plain Const
            # node of the graph, whose value the loader reads and runs nothing for.
            op = graph_ops.get(_node_name(node.constant.operation))
            if op != "Const":
                return (
                    f"object {i} of its object graph is a constant backed by "
                    f"{'no node' if op is None else f'a {op!r} node'}, not a Const"
                )
            continue
        if kind not in _OBJECT_KINDS:
            return f"object {i} of its object graph is a {kind!r}, which exports never hold"
        if node.registered_name or node.registered_saver:
            return (
                f"object {i} of its object graph is revived by registered Python code "
                f"({node.registered_name or node.registered_saver!r})"
            )
        if kind == "user_object" and node.user_object.identifier not in _USER_OBJECTS:
            return (
                f"object {i} of its object graph is a {node.user_object.identifier!r}, "
                "revived by Python code"
            )
    return None


def _read_card(path: Path) -> dict[str, Any]:
    card_path = path / MODEL_CARD_FILE
    if not card_path.is_file():
        raise UntrustedModelError(
            f"no {MODEL_CARD_FILE}: not an xprospect export; {OVERRIDE_HINT}", path
        )
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise UntrustedModelError(f"{MODEL_CARD_FILE} is too big for a model card", path)
    try:
        card = read_json_file(
            card_path, max_bytes=MAX_CARD_BYTES, error=UntrustedModelError, what=MODEL_CARD_FILE
        )
    except ResourceLimitError as exc:  # nesting: a card is flat, so this is not a card
        raise UntrustedModelError(f"{MODEL_CARD_FILE} is not a model card ({exc})", path) from exc
    if not isinstance(card, dict):
        raise UntrustedModelError(f"{MODEL_CARD_FILE} is not a JSON object", path)
    return card


def _card_problem(card: Mapping[str, Any]) -> str | None:
    views = card.get("views")
    if not isinstance(views, list) or tuple(views) not in VIEW_SETS:
        return f"its {MODEL_CARD_FILE} names no valid views ({views!r})"
    size = card.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return f"its {MODEL_CARD_FILE} names no valid size ({size!r})"
    window = card.get("hu_window")
    if (
        not isinstance(window, list)
        or len(window) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in window)
        or not window[0] < window[1]
    ):
        return f"its {MODEL_CARD_FILE} names no valid hu_window ({window!r})"
    fov = card.get("fov_mm")
    if not isinstance(fov, int | float) or isinstance(fov, bool) or not fov > 0:
        return f"its {MODEL_CARD_FILE} names no valid fov_mm ({fov!r})"
    return None


def _dims(info: Any) -> list[int] | None:
    shape = info.tensor_shape
    return None if shape.unknown_rank else [int(d.size) for d in shape.dim]


def _signature_problem(meta_graph: Any, card: Mapping[str, Any]) -> str | None:
    from tensorflow.core.framework import types_pb2

    dtypes = {
        "float32": types_pb2.DT_FLOAT,
        "uint16": types_pb2.DT_UINT16,
        "int16": types_pb2.DT_INT16,
    }
    views = list(card["views"])
    size = int(card["size"])
    signatures = meta_graph.signature_def
    names = set(signatures) - {INIT_OP_SIGNATURE}
    if names != set(EXPECTED_SIGNATURES):
        return (
            f"its signatures are {sorted(names)}, not an xprospect export's "
            f"{sorted(EXPECTED_SIGNATURES)}"
        )
    for name, (in_dtype, out_key, out_dtype) in EXPECTED_SIGNATURES.items():
        sig = signatures[name]
        where = f"signature {name}"
        if sig.method_name != PREDICT_METHOD:
            return f"{where} is a {sig.method_name!r} signature, not {PREDICT_METHOD!r}"
        if sorted(sig.inputs) != sorted(views):
            return f"{where} takes {sorted(sig.inputs)}, not the card's views {views}"
        for view, info in sig.inputs.items():
            if info.dtype != dtypes[in_dtype]:
                return f"{where} input {view} is not {in_dtype}"
            if in_dtype == "float32" and _dims(info) != [-1, size, size, 1]:
                return f"{where} input {view} is not [batch, {size}, {size}, 1]"
        if list(sig.outputs) != [out_key] or sig.outputs[out_key].dtype != dtypes[out_dtype]:
            return f"{where} does not return {out_key!r} as {out_dtype}"
        expected_out = [-1, size, size, size] + ([1] if out_key == "volume" else [])
        if _dims(sig.outputs[out_key]) != expected_out:
            return f"{where} output is not {expected_out}"
    init = signatures.get(INIT_OP_SIGNATURE)
    if init is not None and (init.inputs or len(init.outputs) > 1):
        return f"its {INIT_OP_SIGNATURE} signature is not an initializer"
    return None


def check_saved_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Verifies a SavedModel folder without loading it; returns its model card.

    Checks, in this order: every op in the graph and in every function of the library is
    allowed (:data:`ALLOWED_OPS`; :data:`CHECKPOINT_OPS` in the saver's functions only, on the
    saver's path); the object graph holds plain TensorFlow objects; there is one ``serve``
    MetaGraph; ``model_card.json`` is there and names views, size, HU window and field of view;
    the signatures are :data:`EXPECTED_SIGNATURES` with the card's views, size and dtypes.

    Args:
        path: The SavedModel (version) folder.

    Returns:
        The model card.

    Raises:
        UntrustedModelError: The first check that fails, naming the folder and, for an op,
            the function and the op.
    """
    p = Path(path)
    proto = _read_saved_model(p)
    for meta_graph in proto.meta_graphs:
        problem = _graph_problem(meta_graph) or _object_problem(meta_graph)
        if problem:
            raise UntrustedModelError(f"refused: {problem}; {OVERRIDE_HINT}", p)
    tags = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    if tags != [[SERVE_TAG]]:
        raise UntrustedModelError(
            f"refused: its MetaGraph tags are {tags}, not an xprospect export's [['serve']]; "
            f"{OVERRIDE_HINT}",
            p,
        )
    card = _read_card(p)
    problem = _card_problem(card) or _signature_problem(proto.meta_graphs[0], card)
    if problem:
        raise UntrustedModelError(
            f"refused: {problem}: not an xprospect export; {OVERRIDE_HINT}", p
        )
    return card


def verify_saved_model(path: str | os.PathLike[str], *, trust: bool = False) -> dict[str, Any]:
    """:func:`check_saved_model`, or with ``trust=True`` a warning instead of the error.

    Returns:
        The model card; with ``trust=True`` and a model that fails the check, its model card
        if it is readable and names views, size, HU window and field of view, else ``{}``.

    Raises:
        UntrustedModelError: The check failed and ``trust`` is False.
    """
    try:
        return check_saved_model(path)
    except UntrustedModelError as exc:
        if not trust:
            raise
        reason = exc.message.split(";")[0].removeprefix("refused: ")
        _warn(f"{path}: loading an unverified SavedModel (--trust-model): {reason}")
    try:
        card = _read_card(Path(path))
    except UntrustedModelError:
        return {}
    return {} if _card_problem(card) else card


def _warn(message: str) -> None:
    warnings.warn(message, UnverifiedModelWarning, stacklevel=3)


def _safe_mode_refusal(exc: BaseException) -> bool:
    return "safe_mode" in str(exc)


def load_keras_model(
    path: str | os.PathLike[str], *, trust: bool = False, compile: bool = True
) -> Any:
    """Loads a ``.keras`` file, in Keras's safe mode unless ``trust``.

    Safe mode refuses to deserialise Python lambdas (``Lambda`` layers, lambda activations),
    which would run arbitrary code; registered xprospect classes load as usual
    (:func:`xprospect.inference.register_custom_objects` registers them).

    Raises:
        UntrustedModelError: Safe mode refused the file and ``trust`` is False.
    """
    import keras

    if trust:
        _warn(
            f"{path}: loading with Keras safe mode off (--trust-model): a Lambda layer or "
            "custom object in it runs as Python code"
        )
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=not trust)
    except ValueError as exc:
        if trust or not _safe_mode_refusal(exc):
            raise
        detail = str(exc).split(". ")[0]
        raise UntrustedModelError(
            f"refused by Keras safe mode: {detail}; {OVERRIDE_HINT}", path
        ) from exc
