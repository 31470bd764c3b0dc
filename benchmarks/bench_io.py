"""Time to read the real LIDC chest CT and preprocess it to 128^3, against an X2CT-style pipeline.

xprospect: ``read_nifti`` then ``ct_preprocessing(size=128)`` (reorient to canonical, anti-aliased
resampling to 2.5 mm, crop/pad to 128^3 centred on the body). Peer, in the same run: the pipeline
X2CT's ``ctpro.py`` uses (nibabel ``get_fdata``, ``scipy.ndimage.zoom`` to 1 mm, crop/pad to 320^3
keeping the last 320 slices, ``zoom`` to 128^3).

Run: ``.venv/bin/python benchmarks/bench_io.py [--repeats 5]``. Prints a table and writes
``benchmarks/results/bench_io.json``. Target: xprospect median under 1.5 s on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from xprospect.constants import NUMPY_ENVIRONMENT

# As the command line runs (xprospect.cli): set before NumPy is imported, which reads it.
os.environ.update({k: v for k, v in NUMPY_ENVIRONMENT.items() if k not in os.environ})

import nibabel as nib
import numpy as np
import scipy
import scipy.ndimage

import xprospect
from xprospect.data.samples import sample_ct
from xprospect.io import read_nifti
from xprospect.preprocessing import ct_preprocessing

TARGET_S = 1.5
RESULTS = Path(__file__).parent / "results" / "bench_io.json"


def ours(path: Path) -> np.ndarray:
    return ct_preprocessing(size=128)(read_nifti(path)).array


def x2ct_style(path: Path) -> np.ndarray:
    img = nib.load(str(path))
    a = np.asarray(img.get_fdata(dtype=np.float32)).transpose(2, 1, 0)  # to (z, y, x) like ITK
    spacing = np.asarray(img.header.get_zooms()[:3])[::-1]
    a = scipy.ndimage.zoom(a, spacing / 1.0, order=1, mode="nearest")
    out = np.full((320, 320, 320), -1024.0, np.float32)
    z, y, x = a.shape
    a = a[max(z - 320, 0) :, max((y - 320) // 2, 0) :, max((x - 320) // 2, 0) :][:320, :320, :320]
    oz, oy, ox = [(320 - s) // 2 for s in a.shape]
    out[oz : oz + a.shape[0], oy : oy + a.shape[1], ox : ox + a.shape[2]] = a
    return scipy.ndimage.zoom(out, 128 / 320, order=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    path = sample_ct().ct_path
    ours(path)  # warm the page cache and imports for both
    times: dict[str, list[float]] = {"xprospect": [], "x2ct_style": []}
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        for name, fn in (("xprospect", ours), ("x2ct_style", x2ct_style)):
            t0 = time.perf_counter()
            out = fn(path)
            times[name].append(time.perf_counter() - t0)
            assert out.shape == (128, 128, 128), out.shape
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'pipeline':<12} {'median s':>9} {'min s':>7} {'max s':>7}   (n={args.repeats})")
    for k, v in times.items():
        print(f"{k:<12} {med[k]:>9.3f} {min(v):>7.3f} {max(v):>7.3f}")
    print(
        f"speed-up vs X2CT-style: {med['x2ct_style'] / med['xprospect']:.1f}x; "
        f"target < {TARGET_S} s: {'met' if med['xprospect'] < TARGET_S else 'MISSED'}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "read real LIDC CT (512x512x133 .nii.gz) + preprocess to 128^3",
                "command": f"python benchmarks/bench_io.py --repeats {args.repeats}",
                "seconds": times,
                "median_s": med,
                "target_s": TARGET_S,
                "target_met": med["xprospect"] < TARGET_S,
                "machine": {
                    "cpu_count": __import__("os").cpu_count(),
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "scipy": scipy.__version__,
                    "xprospect": xprospect.__version__,
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
