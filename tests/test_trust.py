"""Models are programs: only verified models load, the hostile SavedModel of issue 15 is refused.

The hostile SavedModel is a ``tf.Module`` with the three signatures of an xprospect export and the
model card of a real export copied beside it, so that only its graph gives it away: its
``serving_default`` calls ``tf.io.write_file`` (or prints, or calls Python). ``predict``,
``evaluate`` and the serving client refuse it before TensorFlow loads anything, so its marker
file is never written; ``--trust-model`` loads it with a warning (and it writes its marker).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xprospect.cli import main
from xprospect.errors import UntrustedModelError
from xprospect.export import HU_OUTPUT_KEY, SIGNATURES, VOLUME_OUTPUT_KEY, export_model
from xprospect.inference import load_predictor
from xprospect.serving import SIGNATURE_OUTPUTS, Client
from xprospect.trust import (
    ALLOWED_OPS,
    CHECKPOINT_OPS,
    EXPECTED_SIGNATURES,
    MODEL_CARD_FILE,
    UnverifiedModelWarning,
    check_saved_model,
    graph_ops,
    load_keras_model,
    verify_saved_model,
)

SIZE = 32
VIEWS = ("frontal", "lateral")
DEMO = Path(__file__).resolve().parents[1] / "saved_models" / "demo" / "1"


def _tiny_model(views=VIEWS):
    from xprospect.models import build_model

    return build_model(
        "512-Dense", size=SIZE, views=views, base_filters=4, dense_units=64, geometry="parallel"
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Exports of a biplanar and a single-view model, as ``xprospect export`` writes them."""
    out = tmp_path_factory.mktemp("trust_exports")
    return {
        "biplanar": export_model(_tiny_model(), "bi", version=1, output_dir=out, warmup=False),
        "single": export_model(
            _tiny_model(("frontal",)), "single", version=1, output_dir=out, warmup=False
        ),
    }


def _payload(kind: str, marker: Path):
    import tensorflow as tf

    def run(x):
        if kind == "write":
            tf.io.write_file(str(marker), "written by a model")
        elif kind == "read":
            return x + tf.cast(tf.strings.length(tf.io.read_file(str(marker))), x.dtype)
        elif kind == "print":
            tf.print("a model prints", output_stream="file://" + str(marker))
        elif kind == "print_v1":
            x = tf.compat.v1.Print(x, [x], "a model prints")
        elif kind == "pyfunc":
            return tf.numpy_function(lambda a: a, [x], tf.float32, stateful=True)
        elif kind == "eager_pyfunc":
            return tf.py_function(lambda a: a, [x], tf.float32)
        return x

    return run


def _hostile(dest: Path, card_from: Path, kind: str = "write", marker: Path | None = None) -> Path:
    """A SavedModel shaped like a biplanar export, with ``kind``'s op in ``serving_default``."""
    import tensorflow as tf

    marker = marker or dest.parent / "marker.txt"
    payload = _payload(kind, marker)
    floats = [tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32, name=v) for v in VIEWS]
    images = [tf.TensorSpec(None, tf.uint16, name=v) for v in VIEWS]

    # Only allowed ops besides the payload: the graph is an export's in all but that op.
    def cube(x, dtype, channel=()):
        shape = tf.stack([tf.shape(x)[0], SIZE, SIZE, SIZE, *channel])
        return tf.broadcast_to(tf.constant(0, dtype), shape)

    def serving_default(frontal, lateral):
        return {VOLUME_OUTPUT_KEY: payload(cube(frontal, tf.float32, (1,)))}

    def predict_hu(frontal, lateral):
        return {HU_OUTPUT_KEY: cube(frontal, tf.int16)}

    def predict_images(frontal, lateral):
        return {HU_OUTPUT_KEY: cube(frontal, tf.int16)}

    module = tf.Module()
    signatures = {
        "serving_default": tf.function(serving_default, input_signature=floats),
        "predict_hu": tf.function(predict_hu, input_signature=floats),
        "predict_images": tf.function(predict_images, input_signature=images),
    }
    tf.saved_model.save(
        module, str(dest), signatures={k: f.get_concrete_function() for k, f in signatures.items()}
    )
    shutil.copy(card_from / MODEL_CARD_FILE, dest / MODEL_CARD_FILE)
    assert not marker.exists()
    return dest


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, exports):
    """The issue's model: ``serving_default`` writes ``marker.txt`` beside its folder."""
    root = tmp_path_factory.mktemp("hostile")
    return _hostile(root / "model", exports["biplanar"])


def _xray_pngs(folder: Path) -> list[str]:
    from xprospect.io import write_png

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:128, :128]
    body = np.exp(-(((yy - 64) / 50.0) ** 2 + ((xx - 64) / 35.0) ** 2))
    args = []
    for view in VIEWS:
        path = folder / f"{view}.png"
        image = (200 * body + rng.integers(0, 30, body.shape)).astype(np.uint8)
        write_png(image, path)
        args += [f"--{view}", str(path)]
    return args


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# --- what is accepted ----------------------------------------------------------------------


def test_the_demo_export_and_every_export_of_the_package_are_accepted(exports, tmp_path):
    for folder in (DEMO, *exports.values()):
        card = check_saved_model(folder)
        assert card["views"] in (["frontal", "lateral"], ["frontal"])
    predictor = load_predictor(exports["single"])
    assert predictor.views == ("frontal",) and predictor.size == SIZE
    assert predictor.hu_window == (-1000.0, 1000.0) and predictor.metadata["model_card"]
    out = predictor.predict({"frontal": np.zeros((1, SIZE, SIZE, 1), np.float32)})
    assert out.shape == (1, SIZE, SIZE, SIZE)
    # An export of a run folder (what tests/test_export.py and 'xprospect export' make).
    run = tmp_path / "run"
    run.mkdir()
    _tiny_model().save(run / "model.keras")
    check_saved_model(export_model(run, "fromrun", output_dir=tmp_path / "out"))


# Small constructor arguments of the other families (as tests/models/ builds them).
FAMILY_PRESETS = {
    "X2CT-CNN+B": {"stem_filters": 4, "growth_rate": 2, "block_layers": (1, 1, 1),
                   "bottleneck": 2, "grid_filters": 4, "decoder_filters": 2},
    "CVAA-GAN": {"base_filters": 2, "max_filters": 4, "growth_rate": 2, "dense_layers": 2},
    "DuoLift-CNN": {"encoder_filters": 4, "encoder_blocks": (1, 1), "base_filters": 2,
                    "lift_filters": (4, 4, 2), "type1_filters": 2, "xray_filters": 2,
                    "unetpp_filters": 2, "unet_filters": 2, "max_filters": 8},
    "S-XR2CT": {"base_filters": 2, "base_filters_2d": 4, "max_filters": 8, "depths": (1, 1, 1),
                "num_heads": 2, "attention_blocks": 1, "dtype": "mixed_bfloat16"},
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(FAMILY_PRESETS))
def test_exports_of_every_model_family_are_accepted(preset, tmp_path):
    from xprospect.models import build_model

    model = build_model(preset, size=SIZE, **FAMILY_PRESETS[preset])
    folder = export_model(model, "m", version=1, output_dir=tmp_path, warmup=False)
    assert check_saved_model(folder)["views"] == [v for v in VIEWS if v in model.input]


def test_back_projection_exports_are_accepted_and_predict_as_the_model(tmp_path):
    """The back-projection layer's sampling tables are captured constants of the export's
    object graph: data, accepted as plain Const nodes."""
    from tensorflow.core.protobuf import saved_model_pb2

    from xprospect.models import build_model

    model = build_model("512-ProjInj", size=SIZE, base_filters=4, dense_units=64, geometry="x2ct")
    folder = export_model(model, "m", version=1, output_dir=tmp_path, warmup=False)
    meta = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    kinds = [n.WhichOneof("kind") for n in meta.meta_graphs[0].object_graph_def.nodes]
    assert "constant" in kinds
    assert check_saved_model(folder)["views"] == list(VIEWS)
    rng = np.random.default_rng(0)
    x = {v: rng.random((1, SIZE, SIZE, 1)).astype(np.float32) for v in VIEWS}
    expected = np.asarray(model(x))[..., 0]
    np.testing.assert_allclose(load_predictor(folder).predict(x), expected, atol=1e-5)


def test_allow_list_covers_what_the_exports_contain_and_nothing_dangerous(exports):
    for folder in (DEMO, *exports.values()):
        (ops,) = graph_ops(folder)
        assert ops.serving_ops() <= ALLOWED_OPS
        assert ops.all_ops() <= ALLOWED_OPS | CHECKPOINT_OPS
        assert len(ops.checkpoint_functions) == 2  # the saver's save and restore functions
    dangerous = {"WriteFile", "ReadFile", "MatchingFiles", "PrintV2", "Print", "PyFunc",
                 "EagerPyFunc", "SaveV2", "RestoreV2", "MergeV2Checkpoints"}  # fmt: skip
    assert not dangerous & ALLOWED_OPS


def test_trust_names_the_signatures_export_writes_and_the_client_reads():
    assert tuple(EXPECTED_SIGNATURES) == SIGNATURES
    for name, (_, key, dtype) in EXPECTED_SIGNATURES.items():
        assert SIGNATURE_OUTPUTS[name] == (key, np.dtype(dtype))
    assert {key for _, key, _ in EXPECTED_SIGNATURES.values()} == {
        VOLUME_OUTPUT_KEY,
        HU_OUTPUT_KEY,
    }


# --- the hostile SavedModel ----------------------------------------------------------------


def test_only_the_graph_gives_the_hostile_model_away(exports, tmp_path):
    clean = _hostile(tmp_path / "clean", exports["biplanar"], kind="none")
    assert check_saved_model(clean)["views"] == list(VIEWS)  # same card, same signatures


def test_predict_refuses_the_hostile_saved_model_before_loading_it(hostile, tmp_path, capsys):
    marker = hostile.parent / "marker.txt"
    out = tmp_path / "ct.nii.gz"
    code = main(["predict", "--model", str(hostile), *_xray_pngs(tmp_path), "--out", str(out)])
    assert code == 6  # a model error (docs/errors.md)
    line = _one_error_line(capsys.readouterr().err)
    assert str(hostile) in line and "WriteFile" in line and "--trust-model" in line
    assert "function " in line  # names where the op is
    assert not marker.exists() and not out.exists()
    with pytest.raises(UntrustedModelError, match="WriteFile"):
        load_predictor(hostile)
    assert not marker.exists()


def test_the_client_refuses_the_hostile_export_folder(hostile):
    marker = hostile.parent / "marker.txt"
    for card in (hostile, hostile / MODEL_CARD_FILE):
        with pytest.raises(UntrustedModelError, match=r"WriteFile.*--trust-model") as info:
            Client("hostile", protocol="rest", model_card=card)
        assert str(hostile) in str(info.value) and "\n" not in str(info.value)
    with pytest.warns(UnverifiedModelWarning, match="WriteFile"):
        client = Client("hostile", protocol="rest", model_card=hostile, trust=True)
    assert client.views == VIEWS and client.fov_mm > 0  # the (copied) card's facts
    assert not marker.exists()  # the client never runs a model itself


def test_trust_model_loads_it_with_a_warning(hostile, tmp_path, capsys):
    marker = hostile.parent / "marker.txt"
    out = tmp_path / "ct.nii.gz"
    args = ["predict", "--model", str(hostile), *_xray_pngs(tmp_path), "--out", str(out)]
    try:
        code = main([*args, "--trust-model"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "warning" in captured.err and "unverified" in captured.err
        assert "WriteFile" in captured.err and str(hostile) in captured.err
        assert out.exists()
        assert marker.read_text() == "written by a model"  # trusted, it did what it does
    finally:
        marker.unlink(missing_ok=True)


def test_evaluate_refuses_the_hostile_saved_model(hostile, tmp_path, capsys):
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    data = tmp_path / "ds"
    cfg = PrepareConfig(size=SIZE, geometry="parallel", shard_size=4, val_fraction=0,
                        test_fraction=0.5)  # fmt: skip
    prepare_dataset([], data, cfg, phantoms=2, progress=False)
    code = main(["evaluate", "--model", str(hostile), "--data", str(data),
                 "--output", str(tmp_path / "ev")])  # fmt: skip
    assert code == 6  # a model error (docs/errors.md)
    line = _one_error_line(capsys.readouterr().err)
    assert str(hostile) in line and "WriteFile" in line
    assert not (hostile.parent / "marker.txt").exists() and not (tmp_path / "ev").exists()


@pytest.mark.parametrize(
    ("kind", "op"),
    [
        ("read", "ReadFile"),
        ("print", "PrintV2"),
        ("print_v1", "Print"),
        ("pyfunc", "PyFunc"),
        ("eager_pyfunc", "EagerPyFunc"),
    ],
)
def test_file_print_and_python_ops_are_refused(kind, op, exports, tmp_path):
    model = _hostile(tmp_path / "model", exports["biplanar"], kind)
    with pytest.raises(UntrustedModelError, match=rf"op {op} \(") as info:
        load_predictor(model)
    assert str(model) in str(info.value)
    assert not (tmp_path / "marker.txt").exists()


# --- not an xprospect export ---------------------------------------------------------------


def test_a_saved_model_without_a_model_card_is_refused_unless_trusted(exports, tmp_path):
    folder = tmp_path / "nocard"
    shutil.copytree(exports["biplanar"], folder)
    (folder / MODEL_CARD_FILE).unlink()
    with pytest.raises(UntrustedModelError, match=f"no {MODEL_CARD_FILE}"):
        load_predictor(folder)
    with pytest.raises(UntrustedModelError, match="not an xprospect export"):
        Client("x", model_card=folder)
    with pytest.warns(UnverifiedModelWarning, match=str(folder)):
        predictor = load_predictor(folder, trust=True)
    assert predictor.views == VIEWS and predictor.metadata == {}


def test_signatures_must_match_the_card(exports, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(exports["biplanar"], folder)
    card = json.loads((folder / MODEL_CARD_FILE).read_text())
    card["views"] = ["frontal"]
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(UntrustedModelError, match=r"takes \['frontal', 'lateral'\]"):
        check_saved_model(folder)
    card["views"], card["size"] = list(VIEWS), 64
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(UntrustedModelError, match=r"not \[batch, 64, 64, 1\]"):
        check_saved_model(folder)
    (folder / MODEL_CARD_FILE).write_text("[1, 2]")
    with pytest.raises(UntrustedModelError, match="not a JSON object"):
        check_saved_model(folder)


def test_a_plain_tf_module_is_not_an_export(exports, tmp_path):
    import tensorflow as tf

    module = tf.Module()
    spec = tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32)
    fn = tf.function(lambda frontal: {"volume": frontal * 2.0}, input_signature=[spec])
    tf.saved_model.save(module, str(tmp_path / "m"), signatures=fn.get_concrete_function())
    shutil.copy(exports["single"] / MODEL_CARD_FILE, tmp_path / "m" / MODEL_CARD_FILE)
    with pytest.raises(UntrustedModelError, match=r"signatures are \['serving_default'\]"):
        check_saved_model(tmp_path / "m")
    with pytest.raises(UntrustedModelError, match=r"no saved_model\.pb"):
        check_saved_model(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "saved_model.pb").write_bytes(b"\xff" * 64)
    with pytest.raises(UntrustedModelError, match="not a readable SavedModel"):
        check_saved_model(tmp_path / "junk")


# --- graphs edited as protobuf -------------------------------------------------------------


def _edit(src: Path, dest: Path, change) -> Path:
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(src, dest)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((dest / "saved_model.pb").read_bytes())
    change(proto.meta_graphs[0])
    (dest / "saved_model.pb").write_bytes(proto.SerializeToString())
    return dest


def _serving_function(meta_graph):
    return next(
        f for f in meta_graph.graph_def.library.function if "traced" not in f.signature.name
    )


def _saver_function(meta_graph, kind):
    library = meta_graph.graph_def.library.function
    return next(f for f in library if f"_traced_{kind}" in f.signature.name)


def test_ops_hidden_in_the_proto_are_found(exports, tmp_path):
    src = exports["single"]

    def call_an_op_as_a_function(mg):
        node = _serving_function(mg).node_def.add(name="sneaky", op="PartitionedCall")
        node.attr["f"].func.name = "WriteFile"

    def nested_call(mg):
        node = _serving_function(mg).node_def.add(name="nested", op="PartitionedCall")
        node.attr["f"].func.name = _serving_function(mg).signature.name
        node.attr["f"].func.attr["g"].list.func.add(name="ReadFile")

    def a_function_named_like_an_op(mg):
        mg.graph_def.library.function.add().signature.name = "WriteFile"

    def save_in_serving(mg):
        _serving_function(mg).node_def.add(name="save", op="SaveV2")

    def save_to_a_constant_path(mg):
        fn = _saver_function(mg, "save")
        path = fn.node_def.add(name="elsewhere", op="Const")
        path.attr["dtype"].type = 7  # DT_STRING
        path.attr["value"].tensor.string_val.append(b"/tmp/elsewhere")
        save = next(n for n in fn.node_def if n.op == "SaveV2")
        save.input[0] = "elsewhere:output:0"

    def call_the_saver_from_serving(mg):
        node = _serving_function(mg).node_def.add(name="call", op="StatefulPartitionedCall")
        node.attr["f"].func.name = _saver_function(mg, "save").signature.name

    def save_in_the_restore_function(mg):
        fn = _saver_function(mg, "restore")
        restore = next(n for n in fn.node_def if n.op == "RestoreV2")
        save = fn.node_def.add(name="save", op="SaveV2")
        save.input.extend(restore.input)

    def graph_level_op(mg):
        mg.graph_def.node.add(name="w", op="WriteFile")

    def custom_object(mg):
        mg.object_graph_def.nodes[0].user_object.identifier = "_tf_keras_layer"

    def constant_backed_by_an_op(mg):
        mg.graph_def.node.add(name="not_data", op="Identity")
        mg.object_graph_def.nodes.add().constant.operation = "not_data"

    cases = {
        call_an_op_as_a_function: "calls 'WriteFile', which is not a function",
        nested_call: "calls 'ReadFile', which is not a function",
        a_function_named_like_an_op: "function WriteFile is named like TensorFlow's op",
        save_in_serving: r"op SaveV2 \(reads or writes files\)",
        save_to_a_constant_path: "SaveV2 on a path not given by the loader",
        call_the_saver_from_serving: r"function __inference__traced_save_\d+ uses op",
        save_in_the_restore_function: r"function __inference__traced_restore_\d+ uses op SaveV2",
        graph_level_op: "the graph uses op WriteFile",
        custom_object: "'_tf_keras_layer', revived by Python code",
        constant_backed_by_an_op: "a constant backed by a 'Identity' node, not a Const",
    }
    for i, (change, message) in enumerate(cases.items()):
        folder = _edit(src, tmp_path / str(i), change)
        with pytest.raises(UntrustedModelError, match=message):
            check_saved_model(folder)
        with pytest.warns(UnverifiedModelWarning):
            assert verify_saved_model(folder, trust=True)["views"] == ["frontal"]


# --- .keras files ---------------------------------------------------------------------------


def test_keras_files_load_in_safe_mode_unless_trusted(tmp_path, capsys):
    import keras

    inp = keras.Input((SIZE, SIZE, 1), name="frontal")
    out = keras.layers.Lambda(lambda x: x * 2.0)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(UntrustedModelError, match=r"safe mode.*Lambda.*--trust-model") as info:
        load_predictor(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    code = main(["predict", "--model", str(path), *_xray_pngs(tmp_path), "--out",
                 str(tmp_path / "o.nii.gz")])  # fmt: skip
    assert code == 6  # a model error (docs/errors.md)
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line and "safe mode" in line
    with pytest.warns(UnverifiedModelWarning, match="safe mode off"):
        model = load_keras_model(path, trust=True)
    np.testing.assert_allclose(np.asarray(model(np.ones((1, SIZE, SIZE, 1)))), 2.0)
