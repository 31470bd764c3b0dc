"""Serving cost: SavedModel against in-process Keras, and what a 128^3 response costs on the wire.

1. Latency. A 512-Dense generator at ``--size`` (default 128^3, the preset's widths: 44.5 M
   parameters, randomly initialised: latency does not depend on the weights) is exported with
   :func:`xprospect.export.export_model` and reloaded with ``tf.saved_model.load``. The same
   biplanar batch of one is then run ``--passes`` times through each of (one untimed warm-up
   call each first; within a pass one call of each method, the order rotating between passes)

   - ``keras_call``: ``model(x, training=False)``, what :class:`xprospect.inference.Predictor`
     does in process;
   - ``keras_predict_on_batch``: Keras' compiled ``tf.function`` predict step;
   - ``savedmodel_serving_default``: the exported ``serving_default`` signature, in process;
   - ``savedmodel_predict_hu``: the ``predict_hu`` signature (adds un-windowing to int16).

   p50 / p95 are over all timed calls of a method; the overhead is the SavedModel p50 over the
   Keras p50 minus one (target <= 5 %).
2. Wire formats. A 128^3 chest phantom (``xprospect.phantoms.chest_phantom``, about half air)
   is encoded and decoded as a TF Serving response would carry it: REST JSON (float32
   normalised, and int16 HU), a ``PredictResponse`` whose TensorProto holds raw
   ``tensor_content`` (float32, int16), and one with typed value fields (``float_val``,
   ``int_val``), which is what TF Serving sends by default (``AsProtoField``). Bytes are the
   serialised message (the JSON text); ms are medians of ``--repeats`` runs (``--json-repeats``
   for JSON) in Python (json / protobuf's upb / NumPy), the client's side. The field
   encodings' encode time is a Python emulation of what TF Serving does in C++, so only their
   bytes and decode times are the client's cost.

Run: ``.venv/bin/python benchmarks/bench_serving.py [--size 128] [--passes 6]``.
Prints a table and writes ``benchmarks/results/bench_serving.json`` and ``bench_serving.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

RESULTS = Path(__file__).parent / "results"
GRPC_DEFAULT_LIMIT = 4 * 2**20


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency(args: argparse.Namespace) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from xprospect.export import export_model
    from xprospect.models import build_model

    keras.utils.set_random_seed(0)
    overrides = {} if args.base_filters is None else {"base_filters": args.base_filters}
    model = build_model(args.preset, size=args.size, **overrides)
    rng = np.random.default_rng(0)
    x = {v: rng.random((1, args.size, args.size, 1), dtype=np.float32) for v in model.input}
    xt = {k: tf.constant(v) for k, v in x.items()}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        dest = export_model(model, "bench", output_dir=tmp, warmup=False)
        export_s = time.perf_counter() - t0
        card = json.loads((dest / "model_card.json").read_text())
        t0 = time.perf_counter()
        loaded = tf.saved_model.load(str(dest))
        load_s = time.perf_counter() - t0
        serving = loaded.signatures["serving_default"]
        hu = loaded.signatures["predict_hu"]
        methods: dict[str, Callable[[], Any]] = {
            "keras_call": lambda: model(x, training=False).numpy(),
            "keras_predict_on_batch": lambda: model.predict_on_batch(x),
            "savedmodel_serving_default": lambda: serving(**xt)["volume"].numpy(),
            "savedmodel_predict_hu": lambda: hu(**xt)["hu"].numpy(),
        }
        a = np.asarray(methods["keras_call"]())
        b = np.asarray(methods["savedmodel_serving_default"]())
        max_diff = float(np.abs(a - b).max())
        warm = {name: _timed(fn) for name, fn in methods.items()}  # first calls, untimed
        times: dict[str, list[float]] = {name: [] for name in methods}
        names = list(methods)
        # Method by method within each pass, the order rotating: load from other jobs on the
        # shared cores then falls on every method alike.
        for r in range(args.passes):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                gc.collect()
                times[name].append(_timed(methods[name]))
            print(f"pass {r + 1}/{args.passes}: "
                  + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)  # fmt: skip
    stats = {
        name: {
            "p50_s": float(np.percentile(t, 50)),
            "p95_s": float(np.percentile(t, 95)),
            "n": len(t),
            "times_s": [float(v) for v in t],
            "first_call_s": warm[name],
        }
        for name, t in times.items()
    }
    overhead = {
        f"{sm}_vs_{k}": stats[sm]["p50_s"] / stats[k]["p50_s"] - 1.0
        for sm in ("savedmodel_serving_default", "savedmodel_predict_hu")
        for k in ("keras_call", "keras_predict_on_batch")
    }
    return {
        "preset": args.preset,
        "size": args.size,
        "base_filters": args.base_filters or "preset",
        "parameters": int(model.count_params()),
        "export_s": export_s,
        "load_s": load_s,
        "sizes": card["sizes"],
        "max_abs_diff_savedmodel_vs_keras": max_diff,
        "methods": stats,
        "overhead": overhead,
    }


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    return 1e3 * statistics.median(_timed(fn) for _ in range(repeats))


def wire(args: argparse.Namespace) -> list[dict[str, Any]]:
    import tensorflow as tf  # noqa: F401 - the protos below import it anyway
    from tensorflow_serving.apis import predict_pb2

    from xprospect.phantoms import chest_phantom
    from xprospect.preprocessing import window_hu
    from xprospect.serving import make_ndarray, make_tensor_proto

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from serving_double import as_proto_field

    hu_f = chest_phantom(args.wire_size, seed=0).volume.array
    hu16 = np.clip(np.round(hu_f), -1000, 1000).astype(np.int16)[None]
    norm = window_hu(hu_f, "xprospect").astype(np.float32)[None, ..., None]
    air = float(np.mean(hu16 < 0))

    def response(proto: Any, key: str) -> bytes:
        r = predict_pb2.PredictResponse()
        r.model_spec.name = "demo"
        r.outputs[key].CopyFrom(proto)
        return bytes(r.SerializeToString())

    def proto_case(
        label: str, arr: np.ndarray, key: str, encode: Callable[[np.ndarray], Any]
    ) -> dict[str, Any]:
        data = response(encode(arr), key)

        def decode() -> np.ndarray:
            return make_ndarray(predict_pb2.PredictResponse.FromString(data).outputs[key])

        assert np.array_equal(decode(), arr)
        return {
            "format": label,
            "bytes": len(data),
            "encode_ms": _median_ms(lambda: response(encode(arr), key), args.repeats),
            "decode_ms": _median_ms(decode, args.repeats),
        }

    def json_case(label: str, arr: np.ndarray, dtype: Any) -> dict[str, Any]:
        text = json.dumps({"outputs": arr.tolist()})

        def decode() -> np.ndarray:
            return np.asarray(json.loads(text)["outputs"], dtype=dtype)

        assert np.array_equal(decode(), arr)
        return {
            "format": label,
            "bytes": len(text.encode()),
            "encode_ms": _median_ms(
                lambda: json.dumps({"outputs": arr.tolist()}), args.json_repeats
            ),
            "decode_ms": _median_ms(decode, args.json_repeats),
        }

    rows = [
        json_case("REST JSON, float32 normalised (serving_default)", norm, np.float32),
        json_case("REST JSON, int16 HU (predict_hu)", hu16, np.int16),
        proto_case("gRPC tensor_content, float32", norm, "volume", make_tensor_proto),
        proto_case("gRPC tensor_content, int16 HU", hu16, "hu", make_tensor_proto),
        proto_case("gRPC float_val (TF Serving default), float32", norm, "volume", as_proto_field),
        proto_case("gRPC int_val (TF Serving default), int16 HU", hu16, "hu", as_proto_field),
        # Not exported: what an unsigned output (HU + 1024, as X2CT stores CT) would cost.
        proto_case(
            "gRPC int_val (TF Serving default), uint16 HU+1024 (not exported)",
            (hu16.astype(np.int32) + 1024).astype(np.uint16),
            "hu",
            as_proto_field,
        ),
    ]
    for row in rows:
        row["fits_grpc_default_4MiB"] = (
            row["bytes"] <= GRPC_DEFAULT_LIMIT if row["format"].startswith("gRPC") else None
        )
        row["air_fraction"] = air
    return rows


def _fmt_table(
    lat: dict[str, Any], rows: list[dict[str, Any]], command: str, wire_size: int
) -> str:
    sizes = lat["sizes"]
    out = [
        "# Serving: SavedModel vs in-process Keras, and response encodings",
        "",
        f"Command: `{command}`",
        "",
        f"Model: {lat['preset']} at {lat['size']}^3, base_filters {lat['base_filters']}, "
        f"{lat['parameters'] / 1e6:.1f} M parameters, float32, batch 1, biplanar; "
        f"export {lat['export_s']:.1f} s, tf.saved_model.load {lat['load_s']:.1f} s; "
        f"variables {sizes['variables_bytes'] / 2**20:.1f} MiB = "
        f"{sizes['variables_over_weights']:.4f}x the weights, saved_model.pb "
        f"{sizes['saved_model_pb_bytes'] / 2**20:.2f} MiB; max |SavedModel - Keras| "
        f"{lat['max_abs_diff_savedmodel_vs_keras']:.2e}.",
        "",
        "| method | p50 s | p95 s | n | min s | first call s |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in lat["methods"].items():
        out.append(
            f"| {name} | {s['p50_s']:.3f} | {s['p95_s']:.3f} | {s['n']} | "
            f"{min(s['times_s']):.3f} | {s['first_call_s']:.2f} |"
        )
    out += ["", "| SavedModel p50 overhead | value |", "|---|---|"]
    out += [f"| {k} | {100 * v:+.1f} % |" for k, v in lat["overhead"].items()]
    out += [
        "",
        f"Response of one {wire_size}^3 volume (chest phantom, "
        f"{100 * rows[0]['air_fraction']:.0f} % of voxels below 0 HU); gRPC's default receive "
        f"limit is {GRPC_DEFAULT_LIMIT:,} bytes.",
        "",
        "| format | bytes | MiB | encode ms | decode ms | fits gRPC 4 MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        fits = "-" if r["fits_grpc_default_4MiB"] is None else str(r["fits_grpc_default_4MiB"])
        out.append(
            f"| {r['format']} | {r['bytes']:,} | {r['bytes'] / 2**20:.2f} | "
            f"{r['encode_ms']:.1f} | {r['decode_ms']:.1f} | {fits} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="512-Dense")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--base-filters", type=int, help="default: the preset's")
    parser.add_argument("--passes", type=int, default=6, help="timed calls of each method")
    parser.add_argument("--wire-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="encode/decode repetitions")
    parser.add_argument("--json-repeats", type=int, default=3, help="the same for JSON (slow)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    command = "python benchmarks/bench_serving.py " + shlex.join(sys.argv[1:])
    t0 = time.perf_counter()
    rows = wire(args)
    lat = latency(args)
    text = _fmt_table(lat, rows, command.strip(), args.wire_size)
    print(text)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": command.strip(),
        "latency": lat,
        "wire": rows,
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "total_s": time.perf_counter() - t0,
    }
    (out / "bench_serving.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench_serving.md").write_text(text)


if __name__ == "__main__":
    main()
