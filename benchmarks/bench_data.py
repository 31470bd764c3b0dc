"""Dataset build speed against an X2CT-style pipeline, and tf.data throughput at 128^3.

(a) Build: the same N CT files (copies of the real LIDC chest CT, 512x512x133 NIfTI) turned into
    training cases at 128^3 with frontal + lateral DRRs.
    - xprospect: ``prepare_dataset`` (read, canonical, anti-aliased resample, body-centred crop,
      batched in-process DRRs, TFRecord shards), ``--workers`` processes.
    - X2CT-style, as X2CT's ``CT2XRAY`` scripts do it: read, ``scipy.ndimage.zoom`` to 1 mm,
      crop/pad to 320^3 keeping the last 320 slices, one Plastimatch ``drr`` subprocess per view
      on the 1 mm volume (X2CT's geometry and HU conversion), 8-bit PNG per view, ``zoom`` of the
      CT to 128^3 and an HDF5 ``ct_xray_data.h5``. Skipped with a note when Plastimatch is absent.
    ``--build-repeats`` rounds, each running xprospect (couch removal on, the default), xprospect
    with ``remove_couch`` off (as ``prepare`` ran before 2026-12-04, for comparison) and the
    X2CT-style pipeline in turn; medians of the rounds.
    Target: xprospect >= 5x the X2CT-style cases per minute.
(b) Input pipeline: ``load_dataset`` over the 128^3 TFRecords just built (batch 4, repeated, no
    augmentation), volumes per second after a warm-up. Target >= 30 volumes/s on 2 cores.
(c) Procedural chest phantom: seconds per 128^3 ``chest_phantom`` (median of 5 seeds after one
    warm-up call). Target <= 1 s.

Run: ``.venv/bin/python benchmarks/bench_data.py [--cases 20] [--workers 2] [--repeats 3]``.
Prints a table and writes ``benchmarks/results/bench_data.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from xprospect.constants import NUMPY_ENVIRONMENT

# As the command line runs (xprospect.cli): set before NumPy is imported, which reads it.
os.environ.update({k: v for k, v in NUMPY_ENVIRONMENT.items() if k not in os.environ})

import h5py
import nibabel as nib
import numpy as np
import scipy.ndimage
from PIL import Image

import xprospect
from xprospect.data import load_dataset
from xprospect.data.prepare import PrepareConfig, prepare_dataset
from xprospect.data.samples import sample_ct
from xprospect.phantoms import chest_phantom
from xprospect.projection import ConeBeam, plastimatch_available, plastimatch_drr
from xprospect.projection.geometry import X2CT_DETECTOR_SIZE_MM, X2CT_SAD_MM, X2CT_SID_MM

RESULTS = Path(__file__).parent / "results" / "bench_data.json"
BUILD_TARGET_X = 5.0
PIPELINE_TARGET_VPS = 30.0
PHANTOM_TARGET_S = 1.0


def x2ct_style_case(path: Path, out_dir: Path) -> None:
    """One case the way X2CT's CT2XRAY scripts build it (see the module docstring)."""
    img = nib.as_closest_canonical(nib.load(str(path)))  # (R, A, S) axes
    hu = np.asarray(img.get_fdata(dtype=np.float32))
    canonical = hu[::-1, ::-1, ::-1].transpose(2, 1, 0)  # to (I, P, L), docs/conventions.md
    spacing = np.asarray(img.header.get_zooms()[:3])[::-1]
    a = scipy.ndimage.zoom(canonical, spacing / 1.0, order=1, mode="nearest")
    cube = np.full((320, 320, 320), -1024.0, np.float32)
    z, y, x = a.shape
    a = a[: min(z, 320), max((y - 320) // 2, 0) :, max((x - 320) // 2, 0) :][:, :320, :320]
    oz, oy, ox = ((320 - s) // 2 for s in a.shape)
    cube[oz : oz + a.shape[0], oy : oy + a.shape[1], ox : ox + a.shape[2]] = a
    xrays = []
    for view in ("frontal", "lateral"):
        geom = ConeBeam(
            view=view,
            sad_mm=X2CT_SAD_MM,
            sid_mm=X2CT_SID_MM,
            detector_shape_px=(128, 128),
            detector_size_mm=X2CT_DETECTOR_SIZE_MM,
        )
        drr = plastimatch_drr(cube, (1.0, 1.0, 1.0), geom, hu_conversion="plastimatch")
        u8 = (drr / max(float(drr.max()), 1e-6) * 255).astype(np.uint8)
        Image.fromarray(u8).save(out_dir / f"{path.stem}_{view}.png")
        xrays.append(u8)
    ct128 = scipy.ndimage.zoom(cube, 128 / 320, order=1)
    case = out_dir / path.name.split(".")[0]
    case.mkdir(exist_ok=True)
    with h5py.File(case / "ct_xray_data.h5", "w") as f:
        f["ct"] = np.clip(ct128 + 1024, 0, 2500)
        f["xray1"], f["xray2"] = xrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="pipeline throughput repeats")
    parser.add_argument("--build-repeats", type=int, default=3, help="dataset build rounds")
    parser.add_argument("--pipeline-volumes", type=int, default=200)
    args = parser.parse_args()

    src = sample_ct().ct_path
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        inputs = []
        for i in range(args.cases):
            dst = work / "inputs" / f"case{i:03d}.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            inputs.append(dst)

        cfg = PrepareConfig(size=128, geometry="x2ct", val_fraction=0, test_fraction=0)
        # Rounds alternate the pipelines so that a slower spell of the machine hits each alike.
        ours: list[float] = []
        ours_couch: list[float] = []
        peers: list[float] = []
        per_case: list[float] = []
        for r in range(args.build_repeats):
            for keep_couch, times in ((False, ours), (True, ours_couch)):
                out = work / f"ours{r}{'-couch' if keep_couch else ''}"
                t0 = time.perf_counter()
                res = prepare_dataset(
                    inputs,
                    out,
                    dataclasses.replace(cfg, remove_couch=not keep_couch),
                    workers=args.workers,
                    progress=False,
                )
                times.append(time.perf_counter() - t0)
                assert len(res.written) == args.cases, res.failed
                if out.name != "ours0":  # the first default build feeds (b)'s pipeline
                    shutil.rmtree(out)
            if plastimatch_available():
                peer = work / f"x2ct{r}"
                peer.mkdir()
                t0 = time.perf_counter()
                for p in inputs:
                    t1 = time.perf_counter()
                    x2ct_style_case(p, peer)
                    per_case.append(time.perf_counter() - t1)
                peers.append(time.perf_counter() - t0)
                shutil.rmtree(peer)
        ours_s = statistics.median(ours)
        peer_s = statistics.median(peers) if peers else None

        rates = []
        for _ in range(args.repeats):
            ds = load_dataset(work / "ours0", "train", batch_size=4, repeat=True, shuffle=False)
            it = iter(ds)
            for _ in range(5):  # warm-up: graph tracing and file cache
                next(it)
            n_batches = args.pipeline_volumes // 4
            t0 = time.perf_counter()
            for _ in range(n_batches):
                _, y = next(it)
            _ = float(y[0, 0, 0, 0, 0])
            rates.append(n_batches * 4 / (time.perf_counter() - t0))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    chest_phantom(128, seed=100)  # warm-up: SciPy's lazily imported modules
    phantom_s = []
    for seed in range(5):
        t0 = time.perf_counter()
        chest_phantom(128, seed=seed)
        phantom_s.append(time.perf_counter() - t0)
    phantom_med = statistics.median(phantom_s)

    ours_cpm = args.cases / ours_s * 60
    peer_cpm = args.cases / peer_s * 60 if peer_s else None
    speedup = ours_cpm / peer_cpm if peer_cpm else None
    vps = statistics.median(rates)
    print(f"(a) build {args.cases} cases at 128^3 from the real CT (workers={args.workers})")
    print(f"    {'pipeline':<12} {'total s':>8} {'cases/min':>10}")
    couch_s = statistics.median(ours_couch)
    print(f"    {'xprospect':<12} {ours_s:>8.1f} {ours_cpm:>10.1f}   {[round(x, 1) for x in ours]}")
    print(
        f"    {'  couch kept':<12} {couch_s:>8.1f} {args.cases / couch_s * 60:>10.1f}   "
        "(remove_couch off, as before 2026-12-04)"
    )
    if peer_s:
        print(
            f"    {'x2ct_style':<12} {peer_s:>8.1f} {peer_cpm:>10.1f}"
            f"   (median {statistics.median(per_case):.2f} s/case)"
        )
        print(
            f"    speed-up {speedup:.1f}x (target >= {BUILD_TARGET_X}x: "
            f"{'met' if speedup >= BUILD_TARGET_X else 'MISSED'})"
        )
    else:
        print("    x2ct_style: skipped, plastimatch is not installed (apt-get install plastimatch)")
    print(
        f"(b) load_dataset at 128^3, batch 4: median {vps:.1f} volumes/s over {args.repeats} runs "
        f"{[round(r, 1) for r in rates]} (target >= {PIPELINE_TARGET_VPS}: "
        f"{'met' if vps >= PIPELINE_TARGET_VPS else 'MISSED'})"
    )
    print(
        f"(c) chest_phantom(128): median {phantom_med:.3f} s over 5 seeds "
        f"(target <= {PHANTOM_TARGET_S} s: "
        f"{'met' if phantom_med <= PHANTOM_TARGET_S else 'MISSED'})"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": f"python benchmarks/bench_data.py --cases {args.cases} --workers "
                f"{args.workers} --repeats {args.repeats} --build-repeats {args.build_repeats}",
                "build": {
                    "cases": args.cases,
                    "rounds": args.build_repeats,
                    "xprospect_s": ours_s,
                    "xprospect_runs_s": ours,
                    "xprospect_cases_per_min": ours_cpm,
                    "xprospect_couch_kept_s": couch_s,
                    "xprospect_couch_kept_runs_s": ours_couch,
                    "xprospect_couch_kept_cases_per_min": args.cases / couch_s * 60,
                    "x2ct_style_s": peer_s,
                    "x2ct_style_runs_s": peers,
                    "x2ct_style_cases_per_min": peer_cpm,
                    "x2ct_style_per_case_s": per_case,
                    "speedup": speedup,
                    "target_x": BUILD_TARGET_X,
                },
                "phantom": {
                    "seconds": phantom_s,
                    "median_s": phantom_med,
                    "target_s": PHANTOM_TARGET_S,
                },
                "pipeline": {
                    "volumes_per_s": rates,
                    "median_volumes_per_s": vps,
                    "batch_size": 4,
                    "target_volumes_per_s": PIPELINE_TARGET_VPS,
                },
                "machine": {
                    "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
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
