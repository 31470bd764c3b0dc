"""scripts/convert_lpips.py reads PyTorch weight files without PyTorch (both of its formats).

The files are written here by a stand-in ``torch`` module: the same pickle opcodes PyTorch's
``torch.save`` emits (``torch._utils._rebuild_tensor_v2`` reductions, ``('storage', ...)``
persistent ids), in the legacy layout (the ``lpips`` heads' format) and the zip layout
(torchvision's current files).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _script():
    spec = importlib.util.spec_from_file_location(
        "convert_lpips", ROOT / "scripts" / "convert_lpips.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _stand_in_torch():
    """``torch`` and ``torch._utils`` in sys.modules only while pickling (other libraries look
    for a real torch there)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage = FloatStorage
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield torch, utils
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, np.ascontiguousarray(data, np.float32).ravel()


class _Tensor:
    def __init__(self, storage, shape, rebuild):
        self.storage, self.shape, self.rebuild = storage, shape, rebuild

    def __reduce__(self):
        stride = tuple(int(s) for s in np.cumprod((1, *self.shape[::-1]))[:-1][::-1])
        return self.rebuild, (self.storage, 0, self.shape, stride, False, OrderedDict())


def _write(path, arrays, *, zip_format):
    storages = {}
    buf = io.BytesIO()
    with _stand_in_torch() as (torch, utils):
        state = OrderedDict()
        for i, (name, value) in enumerate(arrays.items()):
            storages[str(i)] = _Storage(str(i), value)
            state[name] = _Tensor(storages[str(i)], tuple(value.shape), utils._rebuild_tensor_v2)

        def persistent_id(obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.data.size)
            return None

        pickler = pickle.Pickler(buf, protocol=2)
        pickler.persistent_id = persistent_id
        pickler.dump(state)
    if zip_format:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", buf.getvalue())
            for key, s in storages.items():
                z.writestr(f"archive/data/{key}", s.data.tobytes())
        return
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(buf.getvalue())
        pickle.dump(list(storages), f, protocol=2)
        for s in storages.values():
            f.write(struct.pack("<q", s.data.size) + s.data.tobytes())


@pytest.mark.parametrize("zip_format", [False, True])
def test_reads_both_pytorch_formats(tmp_path, zip_format):
    rng = np.random.default_rng(0)
    arrays = {
        "lin0.model.1.weight": rng.random((1, 4, 1, 1)).astype(np.float32),
        "features.0.weight": rng.random((3, 2, 5, 5)).astype(np.float32),
    }
    path = tmp_path / "w.pth"
    _write(path, arrays, zip_format=zip_format)
    state = _script().read_torch_state(path)
    assert list(state) == list(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(state[name], value)


def test_heads_convert_to_vectors(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for net, channels in (("vgg", (64, 128, 256, 512, 512)), ("alex", (64, 192, 384, 256, 256))):
        arrays = {
            f"lin{i}.model.1.weight": rng.random((1, c, 1, 1)).astype(np.float32)
            for i, c in enumerate(channels)
        }
        _write(tmp_path / f"{net}.pth", arrays, zip_format=False)
        written[net] = arrays
    out = tmp_path / "heads.npz"
    _script().convert_heads(tmp_path, out)
    with np.load(out) as data:
        assert sorted(data) == sorted(f"{n}/lin{i}" for n in written for i in range(5))
        for net, arrays in written.items():
            for i in range(5):
                np.testing.assert_array_equal(
                    data[f"{net}/lin{i}"], arrays[f"lin{i}.model.1.weight"].ravel()
                )


def test_refuses_other_classes(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, 1001, {}):
            pickle.dump(header, f, protocol=2)
        pickle.dump(OrderedDict(x=types.SimpleNamespace(a=1)), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing types\.SimpleNamespace"):
        _script().read_torch_state(path)


def test_backbone_converts_torchvision_alexnet(tmp_path):
    from xprospect.lpips import LPIPS

    rng = np.random.default_rng(2)
    # torchvision's AlexNet features: conv layers at indices 0, 3, 6, 8, 10 (OIHW).
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3)}
    shapes[10] = (256, 256, 3, 3)
    arrays = {}
    for i, shape in shapes.items():
        arrays[f"features.{i}.weight"] = rng.normal(0, 0.05, shape).astype(np.float32)
        arrays[f"features.{i}.bias"] = rng.normal(0, 0.05, shape[0]).astype(np.float32)
    source = tmp_path / "alexnet.pth"
    _write(source, arrays, zip_format=True)
    out = tmp_path / "alex.weights.h5"
    _script().convert_backbone("alex", source, out)
    model = LPIPS(net="alex", backbone_weights=str(out))
    convs = [layer for layer in model.features.layers if layer.__class__.__name__ == "Conv2D"]
    for layer, i in zip(convs, sorted(shapes), strict=True):
        kernel, bias = layer.get_weights()
        np.testing.assert_array_equal(
            kernel, np.transpose(arrays[f"features.{i}.weight"], (2, 3, 1, 0))
        )
        np.testing.assert_array_equal(bias, arrays[f"features.{i}.bias"])
