"""X2CT-GAN side by side with the official X2CT code: one GAN training step (G and D), batch 1.

The peer is the official code of Ying et al. 2019 (kylekma/X2CT, its ``3DGAN`` folder; GPLv3).
Its code is never committed here: ``--peer DIR`` names a checkout (the repository or its
``3DGAN`` folder), and this script only runs it, unmodified, in its own virtual environment
(``--peer-venv``, created on first use and reused: the CPU build of torch from the package index
pip is configured with, numpy, pyyaml, easydict, scipy). Two shims are applied in the peer's
process at import time, nothing else: PyYAML 6 needs an explicit ``Loader`` (its
``cfg_from_yaml`` calls ``yaml.load(f)``), and today's torch calls the ``elementwise_mean``
reduction ``mean``. The peer is built as its ``train.py`` builds it: its own option parser,
``experiment/multiview2500/d2_multiview2500.yml``, ``--model_class MultiViewCTGAN``, no GPU;
only the volume size (``fine_size``, ``ct_channel``, ``encoder_input_shape``,
``output_shape``), the batch size (1) and the folder it creates for checkpoints are set after
the YAML is read. One step is its own ``optimize_parameters()`` on random inputs of the shapes
its data loader yields (CT ``(1, D, H, W)``, two X-rays ``(1, 1, H, W)``).

The xprospect side is the X2CT-GAN preset's step as ``xprospect train`` runs it: a
:class:`xprospect.training.Trainer` on a two-phantom dataset prepared once per size, float32
and ``mixed_bfloat16``; a step is the time between two calls of the trainer's step hook (the
input pipeline's next batch included, as in a real run). The official code has no bf16.

Each measurement is its own fresh process (this script with ``--worker``), alternating official,
xprospect fp32 and xprospect bf16 for ``--rounds`` rounds at each of ``--sizes``. Per process:
the times of ``--steps`` steps after the first, the time from the process' start (its start time
in ``/proc/self/stat``) to the first finished step, its peak resident memory (``ru_maxrss``) and
the parameters of G and D. Per cell: the median and range (min-max) of the step times of all its
processes, and of their peak RSS and start-to-first-step times; ratios are xprospect / official.

Run: ``.venv/bin/python benchmarks/bench_x2ct_peer.py --peer /path/to/X2CT [--rounds 3]
[--steps 3] [--sizes 64 128]``. Writes ``benchmarks/results/bench_x2ct_peer.json`` and ``.md``;
without a usable peer it prints one line saying why, writes a JSON that says so (unless real
results are there already) and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Only the standard library at module level: the peer's worker runs this file with the peer's
# interpreter, which has neither TensorFlow nor xprospect.

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = Path.home() / ".cache" / "xprospect" / "x2ct-peer-venv"
PEER_PACKAGES = ("numpy", "pyyaml", "easydict", "scipy")
PEER_YML = Path("experiment") / "multiview2500" / "d2_multiview2500.yml"
PEER_MODEL_CLASS = "MultiViewCTGAN"
# The official wheel index of CPU-only torch builds; used only where pip's own index offers none.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
PRESET = "X2CT-GAN"
CELLS = (("official", "fp32"), ("xprospect", "fp32"), ("xprospect", "bf16"))
"""(implementation, precision) columns of the table, the official code first (the reference)."""
METRICS = ("step_s", "peak_rss_gib", "first_step_s")
RESULT_TAG = "RESULT "


class PeerUnavailable(Exception):
    """The peer cannot be set up here (no checkout, no venv, no import); one-line message."""


# === Process clock and memory (used by every worker) ===


def seconds_since_process_start(spawned_at: float | None = None) -> tuple[float, str]:
    """Seconds since this process started, and where the start time came from.

    The kernel's start time (``/proc/self/stat`` field 22, clock ticks since boot) against
    ``CLOCK_BOOTTIME``: the interpreter's own start-up is included. Without ``/proc`` the
    parent's wall clock just before it spawned this process (``spawned_at``) is used.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started, "proc"
    except (OSError, ValueError, IndexError, AttributeError):
        if spawned_at is None:
            raise
        return time.time() - spawned_at, "spawn"


def peak_rss_gib() -> float:
    """This process' peak resident set size in GiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def emit(result: Mapping[str, Any]) -> None:
    print(RESULT_TAG + json.dumps(result), flush=True)


# === Peer worker (runs under the peer's interpreter) ===


def apply_peer_shims() -> None:
    """The two run-time shims the unmodified official code needs today (this process only).

    - PyYAML >= 6: ``yaml.load`` without a ``Loader`` is an error; the config files are plain
      YAML, so the safe loader is the one given.
    - torch >= 1.0 renamed the ``elementwise_mean`` reduction ``mean`` and later removed the old
      name; the official losses still pass ``elementwise_mean``.
    """
    import torch.nn.modules.loss as torch_loss
    import yaml

    plain_load = yaml.load

    def load(stream: Any, Loader: Any = None, **kwargs: Any) -> Any:
        return plain_load(stream, Loader=Loader or yaml.SafeLoader, **kwargs)

    yaml.load = load
    plain_init = torch_loss._Loss.__init__

    def init(
        self: Any, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
    ) -> None:
        if reduction == "elementwise_mean":
            reduction = "mean"
        plain_init(self, size_average, reduce, reduction)

    torch_loss._Loss.__init__ = init


def build_peer(root: Path, size: int, save_dir: Path) -> Any:
    """The official MultiViewCTGAN as its train.py builds it, at ``size``^3, on the CPU."""
    import copy

    sys.path.insert(0, str(root))
    argv = sys.argv
    sys.argv = [
        "train.py",
        f"--ymlpath={root / PEER_YML}",
        "--gpu=",
        "--dataset=train",
        "--tag=bench",
        "--data=bench",
        "--dataset_class=align_ct_xray_views_std",
        f"--model_class={PEER_MODEL_CLASS}",
    ]
    try:
        import train as peer_train  # the peer's train.py: its option parser
        from lib.config.config import cfg, cfg_from_yaml, merge_dict_and_yaml
        from lib.model.factory import get_model

        args = peer_train.parse_args()
    finally:
        sys.argv = argv
    # What train.py's main block does before building the model: no GPU, no checkpoint.
    args.gpu_ids = []
    args.epoch_count = 1
    cfg_from_yaml(args.ymlpath)
    opt = merge_dict_and_yaml(args.__dict__, copy.deepcopy(cfg))
    opt.fine_size = opt.ct_channel = size
    opt.encoder_input_shape = [size, size]
    opt.output_shape = [size, size, size]
    opt.batch_size = 1
    opt.MODEL_SAVE_PATH = str(save_dir)  # its default is a folder inside the checkout
    model = get_model(opt.model_class)()
    model.init_process(opt)
    model.setup(opt)
    model.train()
    return model


def peer_worker(root: Path, size: int, steps: int, spawned_at: float) -> dict[str, Any]:
    apply_peer_shims()
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_peer(root, size, Path(tmp))
        # The shapes its align_ct_xray_views_std loader yields: CT (B, D, H, W), X-rays
        # (B, 1, H, W), then the file paths.
        ct = torch.rand(1, size, size, size)
        xrays = [torch.rand(1, 1, size, size), torch.rand(1, 1, size, size)]
        times: list[float] = []
        first = since = 0.0
        source = ""
        for i in range(steps + 1):
            t0 = time.perf_counter()
            model.set_input([ct, xrays, "random"])
            model.optimize_parameters()
            dt = time.perf_counter() - t0
            if i == 0:
                first, source = seconds_since_process_start(spawned_at)
                since = time.time() - spawned_at
            else:
                times.append(dt)
        count = (
            sum(p.numel() for p in model.netG.parameters()),
            sum(p.numel() for p in model.netD.parameters()),
        )
    return {
        "step_s": times,
        "first_step_s": first,
        "first_step_source": source,
        "since_spawn_s": since,
        "peak_rss_gib": peak_rss_gib(),
        "params_g": int(count[0]),
        "params_d": int(count[1]),
        "framework": f"torch {torch.__version__}",
        "threads": torch.get_num_threads(),
    }


def peer_check(root: Path) -> dict[str, Any]:
    """Imports what a peer step needs (shims applied): the set-up test of the venv."""
    apply_peer_shims()
    import torch

    sys.path.insert(0, str(root))
    import train  # noqa: F401
    from lib.model.factory import get_model

    get_model(PEER_MODEL_CLASS)
    return {"torch": torch.__version__}


# === xprospect workers (run under this interpreter) ===


def prepare_worker(data: Path, size: int, phantoms: int = 2) -> dict[str, Any]:
    """A ``phantoms``-case training set at ``size``^3 (X2CT geometry), no val or test split."""
    from xprospect.data.prepare import PrepareConfig, prepare_dataset

    cfg = PrepareConfig(size=size, geometry="x2ct", val_fraction=0.0, test_fraction=0.0)
    prepare_dataset([], data, cfg, phantoms=phantoms, workers=1, progress=False)
    return {"data": str(data)}


class _Measured(Exception):
    """Raised by the step hook once the timed steps are done: no final checkpoint or export."""


def timed_training_steps(
    data: Path,
    *,
    preset: str,
    size: int,
    batch: int,
    views: Sequence[str],
    steps: int,
    mixed_precision: str = "none",
    extra: Mapping[str, Any] | None = None,
    spawned_at: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """Times ``steps`` training steps of ``preset`` after its first one, as ``xprospect train``
    runs them (this repository's bench_x2ct_peer and bench_growth workers).

    A step is the time between two calls of the :class:`xprospect.training.Trainer`'s step hook
    (the input pipeline included); the hook stops the run once the timed steps are done, so no
    final checkpoint, validation or export is counted.

    Args:
        data: A prepared dataset folder.
        preset: The model preset.
        size: Cube edge in voxels.
        batch: Batch size.
        views: The preset's input views.
        steps: Steps timed after the first.
        mixed_precision: The training ``mixed_precision`` setting.
        extra: More top-level config sections (e.g. ``{"perceptual": {...}}``).
        spawned_at: The parent's wall clock just before it spawned this process (the fallback
            of :func:`seconds_since_process_start`).

    Returns:
        ``({"first_step_s", "first_step_source", "since_spawn_s" (with ``spawned_at``),
        "peak_rss_gib", "step_s"}, the trainer)``.
    """
    from xprospect.config import config_from_dict
    from xprospect.training import Trainer

    marks: list[float] = []
    out: dict[str, Any] = {}

    def hook(step: int, logs: Mapping[str, float]) -> None:
        marks.append(time.perf_counter())
        if step == 1:
            out["first_step_s"], out["first_step_source"] = seconds_since_process_start(spawned_at)
            if spawned_at is not None:
                out["since_spawn_s"] = time.time() - spawned_at
        if step == steps + 1:
            out["peak_rss_gib"] = peak_rss_gib()
            raise _Measured

    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict(
            {
                "data": {"dir": str(data), "batch_size": batch, "views": list(views)},
                "model": {"preset": preset, "size": size},
                **(extra or {}),
                "training": {
                    # One more than is run, so the last timed step is not the run's end (which
                    # would save, validate and export).
                    "steps": steps + 2,
                    "validation_every": 10**6,
                    "checkpoint_every": 10**6,
                    "log_every": 10**6,
                    "output_dir": tmp,
                    "seed": 0,
                    "mixed_precision": mixed_precision,
                },
            }
        )
        trainer = Trainer(config, step_hook=hook, progress=False)
        with contextlib.suppress(_Measured):
            trainer.fit()
    if "peak_rss_gib" not in out:
        raise RuntimeError(f"the trainer stopped after {len(marks)} steps")
    out["step_s"] = [b - a for a, b in itertools.pairwise(marks)]
    return out, trainer


def xprospect_worker(
    data: Path, size: int, steps: int, precision: str, spawned_at: float
) -> dict[str, Any]:
    out, trainer = timed_training_steps(
        data,
        preset=PRESET,
        size=size,
        batch=1,
        views=("frontal", "lateral"),
        steps=steps,
        mixed_precision="mixed_bfloat16" if precision == "bf16" else "none",
        spawned_at=spawned_at,
    )
    import tensorflow as tf

    return {
        **out,
        "params_g": int(trainer.model.count_params()),
        "params_d": int(trainer.discriminator.count_params()),
        "framework": f"tensorflow {tf.__version__}",
    }


# === Peer set-up (parent) ===


def find_peer_root(peer: Path | None) -> Path:
    """The peer's ``3DGAN`` folder: ``peer`` itself or its ``3DGAN`` subfolder."""
    if peer is None:
        raise PeerUnavailable("no --peer given (a checkout of kylekma/X2CT)")
    for root in (peer / "3DGAN", peer):
        if (root / "train.py").is_file() and (root / PEER_YML).is_file():
            return root.resolve()
    raise PeerUnavailable(f"{peer} holds no X2CT 3DGAN/train.py with {PEER_YML}")


def _run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit {proc.returncode}"


def cpu_torch_version(listing: str) -> str | None:
    """The newest ``+cpu`` torch build in the output of ``pip index versions torch``."""
    for line in listing.splitlines():
        if line.strip().lower().startswith("available versions:"):
            versions = [v.strip() for v in line.split(":", 1)[1].split(",")]
            return next((v for v in versions if v.endswith("+cpu")), None)
    return None


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def setup_peer_env(venv: Path, base_python: str) -> Path:
    """The peer's interpreter: ``venv`` as it is, or created with its packages.

    torch is its CPU build: the newest ``+cpu`` version pip's configured index offers, else the
    official CPU index (the plain wheel pulls gigabytes of CUDA libraries this benchmark never
    uses).
    """
    python = venv_python(venv)
    if python.exists():
        probe = _run([str(python), "-c", "import torch, yaml, easydict, scipy, numpy"])
        if probe.returncode == 0:
            return python
    if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
        raise PeerUnavailable(f"--peer-venv {venv} is a folder but not a virtual environment")
    print(f"creating the peer's environment in {venv} (once)", flush=True)
    made = _run([base_python, "-m", "venv", "--clear", str(venv)])
    if made.returncode != 0:
        raise PeerUnavailable(f"python -m venv {venv} failed: {_last_line(made)}")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    listing = _run([str(python), "-m", "pip", "index", "versions", "torch"])
    version = cpu_torch_version(listing.stdout) if listing.returncode == 0 else None
    if version is not None:
        got = _run([*pip, f"torch=={version}"])
    else:
        got = _run([*pip, "torch", "--index-url", CPU_TORCH_INDEX])
    if got.returncode != 0:
        raise PeerUnavailable(f"pip could not install a CPU torch into {venv}: {_last_line(got)}")
    got = _run([*pip, *PEER_PACKAGES])
    if got.returncode != 0:
        raise PeerUnavailable(f"pip install {' '.join(PEER_PACKAGES)} failed: {_last_line(got)}")
    return python


# === Running workers (parent) ===


def _worker_env(xprospect_side: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if xprospect_side:
        # This checkout's xprospect, not whichever the interpreter has installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_worker(python: str, args: Sequence[str], *, xprospect_side: bool, timeout_s: float) -> dict:
    """Runs ``python this_file --worker ...`` and returns its result, or ``{"error": line}``."""
    cmd = [python, str(Path(__file__).resolve()), "--worker", *args, "--spawned-at"]
    try:
        proc = _run([*cmd, repr(time.time())], env=_worker_env(xprospect_side), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    return {"error": _last_line(proc)}


# === Aggregation and the table ===


def spread(values: Iterable[float]) -> dict[str, float] | None:
    """Median, min and max (None for no values)."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "n": len(vals)}


def aggregate(runs: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """Per size and cell: median and range of each metric, parameters, and ratios.

    ``runs``: one record per process with ``impl``, ``precision``, ``size`` and its worker's
    result. Step times are pooled over the cell's processes; peak RSS and start-to-first-step
    are one value per process. Ratios are the xprospect cell's median over the official fp32
    median.
    """
    table: dict[str, Any] = {}
    for size in sizes:
        cells: dict[str, Any] = {}
        for impl, precision in CELLS:
            ok = [
                r
                for r in runs
                if r["size"] == size
                and r["impl"] == impl
                and r["precision"] == precision
                and "error" not in r["result"]
            ]
            errors = [
                r["result"]["error"]
                for r in runs
                if r["size"] == size
                and r["impl"] == impl
                and r["precision"] == precision
                and "error" in r["result"]
            ]
            cell: dict[str, Any] = {
                "step_s": spread(t for r in ok for t in r["result"]["step_s"]),
                "peak_rss_gib": spread(r["result"]["peak_rss_gib"] for r in ok),
                "first_step_s": spread(r["result"]["first_step_s"] for r in ok),
                "params_g": sorted({r["result"]["params_g"] for r in ok}),
                "params_d": sorted({r["result"]["params_d"] for r in ok}),
                "processes": len(ok),
                "errors": errors,
            }
            cells[f"{impl}_{precision}"] = cell
        ref = cells["official_fp32"]
        for key in ("xprospect_fp32", "xprospect_bf16"):
            cells[key]["ratio"] = {
                m: (
                    cells[key][m]["median"] / ref[m]["median"]
                    if cells[key][m] and ref[m] and ref[m]["median"]
                    else None
                )
                for m in METRICS
            }
        table[str(size)] = cells
    return table


def _value(stats: Mapping[str, float] | None, unit: str, digits: int) -> str:
    if not stats:
        return "n/a"
    med = f"{stats['median']:.{digits}f} {unit}"
    if stats["n"] > 1:
        med += f" ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"
    return med


def _params(cell: Mapping[str, Any]) -> str:
    if not cell["params_g"]:
        return "n/a"

    def mega(counts: Sequence[int]) -> str:
        return "/".join(f"{c / 1e6:.2f}" for c in counts)

    return f"{mega(cell['params_g'])} M + {mega(cell['params_d'])} M"


def markdown(table: Mapping[str, Any], machine: Mapping[str, Any], command: str) -> str:
    """The issue's table per size: official fp32 | xprospect fp32 | xprospect bf16."""
    rows = (
        ("step time", "step_s", "s", 2),
        ("peak RSS", "peak_rss_gib", "GiB", 2),
        ("from process start to the first step done", "first_step_s", "s", 1),
    )
    lines = [
        "# X2CT-GAN: the official code vs xprospect, one GAN training step (G and D), batch 1",
        "",
        "Median (min-max) over processes; step times pooled over each process' timed steps; "
        "(0.43x) = xprospect / official fp32. Params: G + D.",
        "",
    ]
    for size, cells in table.items():
        lines += [
            f"## {size}^3",
            "",
            "| | official, fp32 | xprospect, fp32 | xprospect, bf16 |",
            "|---|---|---|---|",
        ]
        for label, key, unit, digits in rows:
            row = [label, _value(cells["official_fp32"][key], unit, digits)]
            for cell_key in ("xprospect_fp32", "xprospect_bf16"):
                text = _value(cells[cell_key][key], unit, digits)
                ratio = cells[cell_key]["ratio"][key]
                row.append(text + (f" ({ratio:.2f}x)" if ratio is not None else ""))
            lines.append("| " + " | ".join(row) + " |")
        lines.append(
            "| parameters | "
            + " | ".join(_params(cells[k]) for k in ("official_fp32", "xprospect_fp32"))
            + " | "
            + _params(cells["xprospect_bf16"])
            + " |"
        )
        errors = [f"{k}: {e}" for k, c in cells.items() for e in c["errors"]]
        lines += [""] + [f"- error: {e}" for e in errors] + ([""] if errors else [])
    lines += ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def machine_description() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(
            ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
        )
        mem_gib = f"{int(mem.split()[1]) / 1024**2:.1f} GiB"
    except (OSError, StopIteration):
        mem_gib = "unknown"
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "memory": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# === Main ===


def skip(reason: str, output_dir: Path, command: str) -> None:
    """One line, a JSON that says why (kept off real results already there), exit 0."""
    print(f"bench_x2ct_peer: skipped: {reason}")
    path = output_dir / "bench_x2ct_peer.json"
    if path.exists():
        try:
            if not json.loads(path.read_text()).get("skipped"):
                print(f"bench_x2ct_peer: {path} holds real results; left as it is")
                return
        except (OSError, ValueError):
            pass
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"skipped": True, "reason": reason, "command": command}
    path.write_text(json.dumps(record, indent=2) + "\n")


def worker_main(args: argparse.Namespace) -> None:
    kind = args.worker
    if kind == "peer":
        result = peer_worker(Path(args.peer), args.sizes[0], args.steps, args.spawned_at)
    elif kind == "peer-check":
        result = peer_check(Path(args.peer))
    elif kind == "prepare":
        result = prepare_worker(Path(args.data), args.sizes[0])
    else:
        result = xprospect_worker(
            Path(args.data), args.sizes[0], args.steps, kind.split("-")[1], args.spawned_at
        )
    emit(result)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, help="checkout of kylekma/X2CT (or its 3DGAN)")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--peer-python", default=sys.executable, help="interpreter the peer's venv is made from"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per process")
    parser.add_argument(
        "--worker",
        choices=("peer", "peer-check", "prepare", "xprospect-fp32", "xprospect-bf16"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args)
        return
    command = "python benchmarks/bench_x2ct_peer.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    try:
        root = find_peer_root(args.peer)
        python = str(setup_peer_env(args.peer_venv, args.peer_python))
        check = run_worker(
            python, ["peer-check", "--peer", str(root)], xprospect_side=False, timeout_s=600
        )
        if "error" in check:
            raise PeerUnavailable(f"the peer does not import: {check['error']}")
    except PeerUnavailable as exc:
        skip(str(exc), args.output_dir, command)
        return
    machine = {**machine_description(), "peer": str(root), "load_before": _load()}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_x2ct_peer_") as tmp:
        for size in args.sizes:
            data = Path(tmp) / f"data{size}"
            prep = run_worker(
                sys.executable,
                ["prepare", "--data", str(data), "--sizes", str(size)],
                xprospect_side=True,
                timeout_s=args.timeout_s,
            )
            if "error" in prep:
                raise SystemExit(f"bench_x2ct_peer: preparing the {size}^3 data: {prep['error']}")
            for rnd in range(args.rounds):
                for impl, precision in CELLS:
                    common = ["--sizes", str(size), "--steps", str(args.steps)]
                    if impl == "official":
                        res = run_worker(
                            python,
                            ["peer", "--peer", str(root), *common],
                            xprospect_side=False,
                            timeout_s=args.timeout_s,
                        )
                    else:
                        res = run_worker(
                            sys.executable,
                            [f"xprospect-{precision}", "--data", str(data), *common],
                            xprospect_side=True,
                            timeout_s=args.timeout_s,
                        )
                    runs.append(
                        {
                            "impl": impl,
                            "precision": precision,
                            "size": size,
                            "round": rnd,
                            "result": res,
                            "load_after": _load(),  # 1/5/15-min load: was the machine quiet?
                        }
                    )
                    _print_run(runs[-1])
            shutil.rmtree(data, ignore_errors=True)
    machine["load_after"] = _load()
    table = aggregate(runs, args.sizes)
    frameworks = {f"{r['impl']}": r["result"].get("framework") for r in runs}
    machine.update({f"{k} framework": v for k, v in frameworks.items() if v})
    args.output_dir.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "machine": machine, "table": table, "runs": runs}
    (args.output_dir / "bench_x2ct_peer.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(table, machine, command)
    (args.output_dir / "bench_x2ct_peer.md").write_text(text)
    print(text)
    print(f"wrote {args.output_dir / 'bench_x2ct_peer.json'} and bench_x2ct_peer.md")


def _print_run(run: Mapping[str, Any]) -> None:
    res = run["result"]
    head = f"{run['size']:>4}^3 round {run['round']} {run['impl']:<9} {run['precision']}"
    if "error" in res:
        print(f"{head}  error: {res['error']}", flush=True)
        return
    print(
        f"{head}  step {statistics.median(res['step_s']):7.2f} s  first step done "
        f"{res['first_step_s']:6.1f} s after start  peak RSS {res['peak_rss_gib']:5.2f} GiB  "
        f"G {res['params_g'] / 1e6:.2f} M D {res['params_d'] / 1e6:.2f} M  "
        f"load {run.get('load_after', '?')}",
        flush=True,
    )


if __name__ == "__main__":
    main()
