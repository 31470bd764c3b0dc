"""XctDiff on procedural phantoms: the codebook ablation, the pipeline against baselines and
single-view peers, and DDIM sampling cost.

1. **(a) VQ-GAN ablation** (paper Table 2): the stage-1 VQ-GAN trained twice with the same
   budget (steps, seed, data), with and without the z-score (homogeneous) codebook; PSNR-3D and
   SSIM-3D of the reconstructions of the test split and codebook usage (share of entries used
   by the test cases) and perplexity. The paper reports usage 1.8 % → 97.4 % at 4,096 x 3 and
   98.2 % at 8,192 x 8 on LIDC after 80,000 iterations.
2. **(b) The pipeline**: the homogeneous VQ-GAN run continued through the encoder and ldm stages
   (``xprospect train`` configs ``xctdiff-*``), then ``evaluate_dataset`` on the test split with
   the mean-volume and back-projection baselines, and each single-view peer preset in
   :data:`PEERS` (S-XR2CT, X2CT-CNN+S; narrow widths, :data:`PEER_TINY`) trained for the same
   wall-clock seconds as the three XctDiff stages together.
3. **(c) Sampling**: seconds per volume of DDIM with 10 / 50 / 250 steps (median of
   ``--repeats``) and the process's peak RSS.

Defaults are tiny (CPU minutes): 64^3 phantoms, narrow networks, a 1,024 x 8 codebook, a few
dozen steps per stage. ``--full`` builds the paper's sizes (8,192 x 8 codebook, the official
widths) for a machine that can train them. The numbers at the default budget say what the code
does after minutes of CPU, not what XctDiff reaches.

Run: ``.venv/bin/python benchmarks/bench_xctdiff.py [--steps 40] [--phantoms 16] [--full]``.
Prints a table and writes ``benchmarks/results/bench_xctdiff.json`` and ``bench_xctdiff.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
PEERS = ("S-XR2CT", "X2CT-CNN+S")
"""Single-view presets compared in (b), each trained for XctDiff's wall-clock budget; a name
that ``xprospect.models.PRESETS`` does not (yet) hold is skipped with a note."""
PEER_TINY: dict[str, dict[str, Any]] = {
    "S-XR2CT": {
        "base_filters": 4,
        "base_filters_2d": 8,
        "max_filters": 32,
        "depths": [1, 1, 1],
        "num_heads": 2,
        "attention_blocks": 1,
    },
    # A sixteenth of the official widths (stem 64, growth 32, grid 256): the same scale-down as
    # S-XR2CT's row, so both peers train in CPU minutes.
    "X2CT-CNN+S": {
        "stem_filters": 16,
        "growth_rate": 8,
        "block_layers": [2, 2, 2, 2],
        "grid_filters": 32,
        "decoder_filters": 8,
    },
}

TINY: dict[str, Any] = {
    "code_dim": 8,
    "num_codes": 1024,
    "sampling_steps": 10,
    "autoencoder_args": {
        "base_filters": 8,
        "channel_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "groups": 4,
    },
    "prior_encoder_args": {
        "base_filters_2d": 16,
        "base_filters": 8,
        "mlp_hidden": 64,
        "num_res_blocks": 1,
        "groups": 4,
    },
    "unet_args": {
        "base_filters": 16,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_levels": [1],
        "num_heads": 2,
        "context_dim": 16,
        "groups": 4,
    },
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _config(args: argparse.Namespace, stage: str, out: Path, **over: Any) -> Any:
    from xprospect.config import config_from_dict

    previous = over.pop("previous", None)
    overrides = {} if args.full else json.loads(json.dumps(TINY))
    loss = {
        "vqgan": {"mae": 1.0, "vq": 1.0, "adversarial": 0.1},
        "encoder": {"latent": 1.0, "vq": 1.0},
        "ldm": {"diffusion": 1.0},
    }[stage]
    cfg: dict[str, Any] = {
        "data": {"dir": str(args.data), "batch_size": 2, "views": ["frontal"]},
        "model": {"preset": "XctDiff", "overrides": overrides},
        "loss": loss,
        "optimizer": {
            "name": "adam",
            "learning_rate": 2e-4 if stage == "vqgan" else 1e-4 * (10 if not args.full else 1),
            "use_ema": stage == "ldm",
            "ema_momentum": 0.99,
        },
        "gan": {"adversarial": "bce", "discriminator": {"base_filters": 8, "num_layers": 3}},
        "xctdiff": {
            "stage": stage,
            "previous_run": str(previous) if previous else None,
            # The GAN term from the second half of the budget, as the shipped config does.
            "gan_start_step": args.steps // 2,
            "gan_slices": 4,
            "val_sampling_steps": 10,
        },
        "training": {
            "steps": args.steps * (2 if stage == "ldm" else 1),
            "validation_every": 10**9,
            "checkpoint_every": 10**9,
            "log_every": max(1, args.steps // 5),
            "output_dir": str(out),
            "seed": 0,
        },
    }
    for key, value in over.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return config_from_dict(cfg)


def _train(cfg: Any) -> float:
    from xprospect.training import Trainer

    t0 = time.perf_counter()
    result = Trainer(cfg, progress=False).fit()
    if result.status != "completed":
        raise RuntimeError(result.message)
    return time.perf_counter() - t0


def vq_ablation(args: argparse.Namespace) -> dict[str, Any]:
    """(a): the homogeneous codebook on and off, same budget."""
    import keras

    import xprospect.models  # noqa: F401
    from xprospect.evaluation import dataset_cases
    from xprospect.metrics import psnr_3d, ssim_3d
    from xprospect.models.xctdiff import codebook_usage, perplexity

    rows = {}
    for normalize in (True, False):
        name = "homogeneous" if normalize else "plain"
        out = args.work / f"vqgan_{name}"
        over = {"model.overrides": _with_codebook(args, normalize)}
        seconds = _train(_config(args, "vqgan", out, **over))
        ae = keras.saving.load_model(out / "model.keras", compile=False)
        psnrs, ssims, codes = [], [], []
        for _, truth in dataset_cases(args.data, "test", "xprospect"):
            vol = truth[None, ..., None].astype(np.float32)
            pred = keras.ops.convert_to_numpy(ae(vol))[0, ..., 0]
            _, idx = ae.quantizer(ae.encoder(vol))
            codes.append(keras.ops.convert_to_numpy(idx).ravel())
            psnrs.append(float(psnr_3d(truth, pred)))
            ssims.append(float(ssim_3d(truth, pred)))
        all_codes = np.concatenate(codes)
        rows[name] = {
            "normalize_codes": normalize,
            "train_s": round(seconds, 1),
            "psnr_3d": float(np.mean(psnrs)),
            "ssim_3d": float(np.mean(ssims)),
            "codebook_usage": float(codebook_usage(all_codes, ae.num_codes)),
            "perplexity": float(perplexity(all_codes, ae.num_codes)),
            "test_cases": len(psnrs),
        }
        print(f"(a) {name}: {rows[name]}", flush=True)
    return rows


def _with_codebook(args: argparse.Namespace, normalize: bool) -> dict[str, Any]:
    over = {} if args.full else json.loads(json.dumps(TINY))
    return {**over, "normalize_codes": normalize}


def real_ct(size: int) -> tuple[Any, ...]:
    """The real LIDC chest CT at ``size``^3, its frontal X2CT DRR as the input (and its line
    integrals for the back-projection baseline), the truth in [0, 1], spacing, HU window and
    validity mask (:func:`xprospect.evaluation.real_ct_case`, as bench_models' real-CT columns;
    scored inside the mask)."""
    import numpy as np

    from xprospect.data.samples import sample_ct
    from xprospect.evaluation import real_ct_case
    from xprospect.preprocessing import resolve_hu_window, window_hu

    window = resolve_hu_window("xprospect")
    real = real_ct_case(sample_ct().ct_path, size)
    frontal = {k: v for k, v in real.case.items() if k.startswith("frontal")}
    truth = np.asarray(window_hu(real.hu, window))
    return frontal, truth, real.spacing_mm, window, real.mask


def _real_scores(method: Any, real: tuple[Any, ...]) -> dict[str, float]:
    from xprospect.metrics import evaluate_case

    case, truth, spacing, window, mask = real
    pred = method(case)
    scores = evaluate_case(truth, pred, hu_window=window, spacing_mm=spacing, mask=mask)
    return {m: float(scores[m]) for m in ("psnr_3d", "ssim_3d")}


def pipeline(args: argparse.Namespace, vq_seconds: float) -> dict[str, Any]:
    """(b): encoder and ldm stages on the homogeneous VQ-GAN, then the test split and the real
    CT, for XctDiff, both baselines and the peers."""
    from xprospect.evaluation import BackProjectionBaseline, MeanVolumeBaseline, evaluate_dataset
    from xprospect.inference import load_predictor
    from xprospect.models import PRESETS

    real = real_ct(args.size)
    window = real[3]
    vq = args.work / "vqgan_homogeneous"
    enc, ldm = args.work / "encoder", args.work / "ldm"
    seconds = vq_seconds + _train(_config(args, "encoder", enc, previous=vq))
    seconds += _train(_config(args, "ldm", ldm, previous=enc))
    predictor = load_predictor(ldm)
    predictor.set_sampling(steps=args.eval_sampling_steps, seed=0)
    res = evaluate_dataset(predictor, args.data, args.work / "eval_xctdiff", panels=1)
    out: dict[str, Any] = {"train_s": {"XctDiff": round(seconds, 1)}, "methods": {}}
    methods = {
        "model": ("XctDiff", lambda case: predictor.predict({"frontal": case["frontal"]})[0]),
        "mean_volume": ("mean volume", MeanVolumeBaseline.fit(args.data, window)),
        "back_projection": (
            "back-projection",
            BackProjectionBaseline.fit(args.data, ("frontal",), window),
        ),
    }
    for method, (label, fn) in methods.items():
        out["methods"][label] = {
            m: res.mean(method, m) for m in ("psnr_3d", "ssim_3d") if m in res.summary[method]
        }
        out["methods"][label]["real_ct"] = _real_scores(fn, real)
    for peer in PEERS:
        if peer not in PRESETS:
            out["methods"][peer] = {"note": f"preset {peer} not in this build (hook: PEERS)"}
            continue
        out["train_s"][peer] = round(_train_peer(args, peer, seconds), 1)
        peer_predictor = load_predictor(args.work / peer)
        pres = evaluate_dataset(
            peer_predictor,
            args.data,
            args.work / f"eval_{peer}",
            baselines=False,
            panels=0,
        )
        out["methods"][peer] = {m: pres.mean("model", m) for m in ("psnr_3d", "ssim_3d")}
        out["methods"][peer]["real_ct"] = _real_scores(
            lambda case, p=peer_predictor: p.predict({"frontal": case["frontal"]})[0], real
        )
    print(f"(b) {out}", flush=True)
    return out


def _train_peer(args: argparse.Namespace, peer: str, budget_s: float) -> float:
    """Trains ``peer`` for about ``budget_s`` seconds of wall clock (run overheads included,
    as for XctDiff's three runs): a 4-step probe times a step (the median of steps 2-4, after
    tracing) and its fixed cost, then the run gets what fits in the budget."""
    from xprospect.config import config_from_dict

    def cfg(steps: int, out: Path) -> Any:
        return config_from_dict(
            {
                "data": {"dir": str(args.data), "batch_size": 2, "views": ["frontal"]},
                "model": {"preset": peer, "overrides": {} if args.full else PEER_TINY[peer]},
                "perceptual": {"weights": None, "num_slices": 4},
                "training": {
                    "steps": steps,
                    "validation_every": 10**9,
                    "checkpoint_every": 10**9,
                    "output_dir": str(out),
                },
            }
        )

    from xprospect.training import Trainer

    probe = args.work / f"{peer}_probe"
    stamps: list[float] = []
    t0 = time.perf_counter()
    Trainer(
        cfg(4, probe),
        progress=False,
        step_hook=lambda step, logs: stamps.append(time.perf_counter()),
    ).fit()
    total = time.perf_counter() - t0
    shutil.rmtree(probe, ignore_errors=True)
    step_s = statistics.median(np.diff(stamps))
    overhead = max(0.0, total - 4 * step_s)
    steps = max(2, int((budget_s - overhead) / max(step_s, 1e-3)))
    return _train(cfg(steps, args.work / peer))


def sampling(args: argparse.Namespace) -> dict[str, Any]:
    """(c): DDIM seconds per volume for 10 / 50 / 250 steps, and peak RSS."""
    import keras

    import xprospect.models  # noqa: F401

    pipe = keras.saving.load_model(args.work / "ldm" / "model.keras", compile=False)
    x = {"frontal": np.random.default_rng(0).random((1, args.size, args.size, 1), "float32")}
    out: dict[str, Any] = {}
    for steps in (10, 50, 250):
        pipe.generate(x, steps=2)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pipe.generate(x, steps=steps, seed=0)
            times.append(time.perf_counter() - t0)
        out[f"ddim_{steps}_s"] = statistics.median(times)
    out["peak_rss_mb"] = _peak_rss_mb()
    out["latent_grid"] = [pipe.latent_size] * 3 + [pipe.code_dim]
    print(f"(c) {out}", flush=True)
    return out


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        "# XctDiff benchmark (`benchmarks/bench_xctdiff.py`)",
        "",
        f"Command: `{report['command']}`; {report['machine']}.",
        "",
        "## (a) VQ-GAN: homogeneous (z-score) codebook vs plain VQ, same budget",
        "",
        "| codebook | PSNR-3D (dB) | SSIM-3D | usage | perplexity | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["vq_ablation"].items():
        lines.append(
            f"| {name} | {r['psnr_3d']:.2f} | {r['ssim_3d']:.3f} | "
            f"{100 * r['codebook_usage']:.1f} % | {r['perplexity']:.1f} | {r['train_s']} |"
        )
    lines += [
        "",
        "Paper (LIDC, 80,000 iterations): usage 1.8 % (plain) → 97.4 % (z-score), 4,096 x 3.",
        "",
        "## (b) XctDiff vs baselines and single-view peers",
        "",
        "Test split of the phantoms, and the real LIDC chest CT (never trained on) from its own",
        "frontal DRR.",
        "",
        "| method | PSNR-3D (dB) | SSIM-3D | real CT PSNR-3D | real CT SSIM-3D | train s |",
        "|---|---|---|---|---|---|",
    ]
    b = report["pipeline"]
    for name, r in b["methods"].items():
        if "note" in r:
            lines.append(f"| {name} | {r['note']} | | | | |")
            continue
        real = r.get("real_ct", {})
        lines.append(
            f"| {name} | {r['psnr_3d']:.2f} | {r['ssim_3d']:.3f} | "
            f"{real.get('psnr_3d', float('nan')):.2f} | {real.get('ssim_3d', float('nan')):.3f} | "
            f"{b['train_s'].get(name, '')} |"
        )
    c = report["sampling"]
    lines += [
        "",
        f"## (c) DDIM sampling per volume (latent {'x'.join(map(str, c['latent_grid']))})",
        "",
        "| steps | seconds |",
        "|---|---|",
        *(f"| {s} | {c[f'ddim_{s}_s']:.2f} |" for s in (10, 50, 250)),
        "",
        f"Peak RSS of the benchmark process: {c['peak_rss_mb']:.0f} MB.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--phantoms", type=int, default=16)
    p.add_argument("--steps", type=int, default=40, help="steps of each stage (ldm: twice)")
    p.add_argument("--eval-sampling-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--full", action="store_true", help="the paper's network sizes")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_xctdiff"))
    p.add_argument("--keep", action="store_true", help="keep --work")
    args = p.parse_args()

    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    if args.work.exists():
        shutil.rmtree(args.work)
    args.data = args.work / "data"
    cfg = PrepareConfig(size=args.size, shard_size=4, val_fraction=0.15, test_fraction=0.25)
    prepare_dataset([], args.data, cfg, phantoms=args.phantoms, progress=False)

    t0 = time.perf_counter()
    vq = vq_ablation(args)
    report: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}",
        "size": args.size,
        "phantoms": args.phantoms,
        "steps": args.steps,
        "full": args.full,
        "vq_ablation": vq,
        "pipeline": pipeline(args, vq["homogeneous"]["train_s"]),
        "sampling": sampling(args),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_xctdiff.json").write_text(json.dumps(report, indent=2) + "\n")
    md = _markdown(report)
    (RESULTS / "bench_xctdiff.md").write_text(md)
    print(md)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
