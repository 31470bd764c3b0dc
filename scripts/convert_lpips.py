"""Converts LPIPS' linear heads (and torchvision backbones) from PyTorch files, without PyTorch.

Run once by a maintainer; its output ships in ``xprospect/assets/lpips/``::

    pip download lpips==0.1.4 --no-deps -d /tmp/lpips && unzip -o /tmp/lpips/*.whl -d /tmp/lpips
    python scripts/convert_lpips.py heads /tmp/lpips/lpips/weights/v0.1 \\
        xprospect/assets/lpips/lpips_heads_v0.1.npz

The heads of ``lpips`` 0.1.4 (Zhang et al., CVPR 2018; BSD-2-Clause, licence next to the ``.npz``)
are 1 x 1 convolutions without bias, one per backbone layer: ``linN.model.1.weight`` of shape
``(1, C, 1, 1)``. They are stored as ``<net>/lin<N>`` vectors of length ``C``.

A backbone for :class:`xprospect.lpips.LPIPS` (torchvision's ImageNet VGG16 or AlexNet, whose
features LPIPS' heads were trained on) converts with::

    python scripts/convert_lpips.py backbone vgg vgg16-397923af.pth vgg16_lpips.weights.h5
    python scripts/convert_lpips.py backbone alex alexnet-owt-7be5be79.pth alex_lpips.weights.h5

PyTorch is not needed: the files are read with a restricted unpickler that knows only how tensors
are stored (both PyTorch's legacy format, that of the ``lpips`` heads, and its zip format).
"""

from __future__ import annotations

import argparse
import io
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = _DTYPES[name]


class _LazyTensor:
    """A tensor whose storage may not have been read yet (legacy files store data after it)."""

    def __init__(self, storage: Any, offset: int, size: Any, stride: Any) -> None:
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        flat = self.storage()
        step = flat.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * step for s in self.stride),
        ).copy()


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> _LazyTensor:
    return _LazyTensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Only the classes a state dict of tensors uses; anything else is refused."""

    def __init__(self, file: Any, load_storage: Any) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self.dtypes: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a weights file")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        _, storage_type, key, _, numel = pid[:5]
        self.dtypes[str(key)] = storage_type.dtype
        return lambda: self._load_storage(str(key), storage_type.dtype, int(numel))


def read_torch_state(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` file as NumPy arrays, without PyTorch."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            root = z.namelist()[0].split("/")[0]

            def zip_storage(key: str, dtype: Any, numel: int) -> np.ndarray:
                return np.frombuffer(z.read(f"{root}/data/{key}"), dtype=dtype, count=numel)

            state = _Unpickler(io.BytesIO(z.read(f"{root}/data.pkl")), zip_storage).load()
            return {k: v.array() for k, v in state.items()}
    f = io.BytesIO(path.read_bytes())
    if pickle.load(f) != _LEGACY_MAGIC:
        raise ValueError(f"{path} is not a PyTorch file")
    pickle.load(f)  # protocol version
    pickle.load(f)  # sys info
    storages: dict[str, np.ndarray] = {}

    def legacy_storage(key: str, dtype: Any, numel: int) -> np.ndarray:
        return storages[key]

    unpickler = _Unpickler(f, legacy_storage)
    state = unpickler.load()
    dtypes = unpickler.dtypes
    # Then, for each storage key in this order: its element count (int64) and its raw data.
    for key in pickle.load(f):
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = np.dtype(dtypes[key])
        storages[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype=dtype)
    return {k: v.array() for k, v in state.items()}


def convert_heads(folder: Path, output: Path) -> dict[str, np.ndarray]:
    """``<net>/lin<N>`` vectors of the ``vgg.pth`` and ``alex.pth`` heads, saved to ``output``."""
    arrays: dict[str, np.ndarray] = {}
    for net in ("vgg", "alex"):
        state = read_torch_state(folder / f"{net}.pth")
        for name, value in state.items():
            layer = name.split(".")[0]  # linN
            arrays[f"{net}/{layer}"] = np.asarray(value, np.float32).reshape(-1)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    return arrays


def convert_backbone(net: str, source: Path, output: Path) -> None:
    """torchvision's ``features.N.weight/bias`` into :class:`xprospect.lpips.LPIPS`' backbone."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from xprospect.lpips import backbone

    state = read_torch_state(source)
    model = backbone(net, "random")  # the architecture; every weight is then set
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    if len(indices) != len(convs):
        raise ValueError(
            f"{source}: {len(indices)} conv layers, the {net} backbone has {len(convs)}"
        )
    for layer, i in zip(convs, indices, strict=True):
        kernel = np.transpose(state[f"features.{i}.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
        layer.set_weights([kernel, state[f"features.{i}.bias"]])
    model.save_weights(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("heads")
    h.add_argument("folder", type=Path, help="lpips/weights/v0.1 of the lpips 0.1.4 wheel")
    h.add_argument("output", type=Path)
    b = sub.add_parser("backbone")
    b.add_argument("net", choices=("vgg", "alex"))
    b.add_argument("source", type=Path, help="torchvision's ImageNet .pth")
    b.add_argument("output", type=Path, help="a .weights.h5 file")
    args = parser.parse_args(argv)
    if args.what == "heads":
        for key, value in convert_heads(args.folder, args.output).items():
            print(f"{key}: {value.shape}")
    else:
        convert_backbone(args.net, args.source, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
