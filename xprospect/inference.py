"""From trained models to CT volumes: loading, input preparation, prediction to HU.

A trained model maps window-normalised X-rays (``{"frontal": (B, S, S, 1), "lateral": ...}``,
[0, 1], bright = dense) to a window-normalised canonical volume ``(B, S, S, S, 1)`` in [0, 1].
:class:`Predictor` wraps a model with what it needs to be used on new data: its input views and
size, the HU window its targets were normalised with, and the field of view of its volumes, read
from the run folder's ``config.yaml`` where there is one.

Real radiographs are prepared like the DRRs the model saw in training: padded to a square,
resized, and windowed between their 0.5th and 99.5th percentiles to [0, 1]
(:func:`xprospect.preprocessing.radiograph_preprocessing`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprospect.constants import DEFAULT_FOV_MM, VIEWS
from xprospect.errors import ConfigError, MissingDataError
from xprospect.image import Radiograph, Volume
from xprospect.preprocessing import radiograph_preprocessing, resolve_hu_window, unwindow_hu

__all__ = [
    "Predictor",
    "load_predictor",
    "prepare_xray",
    "register_custom_objects",
    "volume_from_output",
    "without_graph_rewrites",
    "xray_inputs",
]


def register_custom_objects() -> None:
    """Registers every Keras class of xprospect's models, losses and metrics for loading.

    ``keras.saving.load_model`` finds a custom class by its registered name (``xprospect>...``),
    which exists once the module defining the class has been imported; this imports them all
    (``xprospect.models`` imports every model family). :func:`load_predictor` calls it; call it
    before loading an xprospect ``.keras`` file with Keras directly.
    """
    import contextlib
    import importlib

    for name in (
        "xprospect.models",
        "xprospect.losses",
        "xprospect.perceptual",
        "xprospect.metrics",
    ):
        with contextlib.suppress(ImportError):  # a partial install still loads plain Keras models
            importlib.import_module(name)


@dataclass
class Predictor:
    """A trained reconstruction model and the facts needed to use it.

    Attributes:
        model: A Keras model (or any callable mapping the input dict to a volume batch).
        views: Input names, ``("frontal", "lateral")`` or ``("frontal",)``.
        size: Edge length of the input X-rays and of the output cube, in pixels / voxels.
        hu_window: The window that mapped HU to [0, 1] for the targets.
        fov_mm: Field of view of the output cube (320 mm in xprospect's datasets).
        source: Where the model was loaded from.
    """

    model: Any
    views: tuple[str, ...] = VIEWS
    size: int = 64
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    fov_mm: float = DEFAULT_FOV_MM
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict(self, inputs: Mapping[str, np.ndarray], batch_size: int = 1) -> np.ndarray:
        """Runs the model on ``{"frontal": (B, S, S, 1), ...}``; returns (B, S, S, S) in [0, 1]."""
        missing = [v for v in self.views if v not in inputs]
        if missing:
            raise ConfigError(f"the model needs input view(s) {missing}; got {sorted(inputs)}")
        batch = {v: np.asarray(inputs[v], dtype=np.float32) for v in self.views}
        n = len(next(iter(batch.values())))
        outs = []
        for start in range(0, n, batch_size):
            chunk = {v: a[start : start + batch_size] for v, a in batch.items()}
            out = (
                self.model(chunk, training=False)
                if hasattr(self.model, "layers")
                else (self.model(chunk))
            )
            outs.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(outs)[..., 0]

    def set_sampling(self, steps: int | None = None, seed: int | None = None) -> None:
        """Sets the number of sampling steps and the seed of a diffusion model (XctDiff) for the
        next predictions (None keeps the model's).

        Raises:
            ConfigError: The model does not sample, or a value is not a positive / non-negative
                integer.
        """
        if steps is None and seed is None:
            return
        if not hasattr(self.model, "sampling_steps"):
            raise ConfigError(
                "--sampling-steps/--seed: this model does not sample (only diffusion models such "
                "as XctDiff do)"
            )
        if steps is not None:
            if int(steps) < 1:
                raise ConfigError(f"--sampling-steps must be at least 1, got {steps}")
            self.model.sampling_steps = int(steps)
        if seed is not None:
            if int(seed) < 0:
                raise ConfigError(f"--seed must be >= 0, got {seed}")
            self.model.seed = int(seed)

    def reconstruct(
        self,
        xrays: Mapping[str, Radiograph | np.ndarray],
        prepared: Mapping[str, np.ndarray] | None = None,
    ) -> Volume:
        """Reconstructs one CT from radiographs.

        Args:
            xrays: Radiographs by view, prepared with :func:`prepare_xray`.
            prepared: Model inputs by view that are used as they are instead, ``(size, size)``
                in [0, 1] (e.g. real X-rays in DRR style from
                :meth:`xprospect.style.apply.StyleModel.real_to_drr`).
        """
        ready = dict(prepared or {})
        for v, image in ready.items():
            if np.shape(image) != (self.size, self.size):
                raise ConfigError(
                    f"prepared {v} input must be ({self.size}, {self.size}), got {np.shape(image)}"
                )
        inputs = {
            v: (
                np.asarray(ready[v], np.float32)
                if v in ready
                else prepare_xray(xrays[v], self.size)
            )[None, ..., None]
            for v in self.views
        }
        return volume_from_output(self.predict(inputs)[0], self.hu_window, self.fov_mm)


def prepare_xray(image: Radiograph | np.ndarray, size: int) -> np.ndarray:
    """A real or synthetic radiograph as a model input: (size, size) float32 in [0, 1].

    Pads to a square (with the image minimum), resizes with anti-aliasing and windows between the
    0.5th and 99.5th percentiles, like :func:`xprospect.preprocessing.radiograph_preprocessing`.
    """
    img = image if isinstance(image, Radiograph) else Radiograph(np.asarray(image, np.float32))
    out = radiograph_preprocessing(size=size)(img)
    return np.asarray(out.array, dtype=np.float32)


def volume_from_output(
    output01: np.ndarray, hu_window: Sequence[float] | str, fov_mm: float = DEFAULT_FOV_MM
) -> Volume:
    """A model output cube in [0, 1] as a canonical HU :class:`Volume` centred on the origin."""
    cube = np.asarray(output01, dtype=np.float32)
    if cube.ndim == 4 and cube.shape[-1] == 1:
        cube = cube[..., 0]
    if cube.ndim != 3 or len(set(cube.shape)) != 1:
        raise ConfigError(f"expected a cube (S, S, S), got shape {cube.shape}")
    hu = unwindow_hu(np.clip(cube, 0.0, 1.0), resolve_hu_window(hu_window))
    return Volume.from_spacing(hu, fov_mm / cube.shape[0], source="xprospect prediction")


def xray_inputs(model: Any) -> list[Any]:
    """The symbolic X-ray inputs of a reconstruction model (one per view, named by it).

    A pipeline without symbolic inputs of its own (XctDiff) names the network that takes the
    X-rays (its prior encoder) as ``xray_network``; its inputs are the pipeline's.
    """
    return list((getattr(model, "xray_network", None) or model).inputs)


def load_predictor(path: str | os.PathLike[str], *, trust: bool = False) -> Predictor:
    """Loads a trained model from a run folder, a ``.keras`` file or a SavedModel folder.

    A run folder (written by ``xprospect train``) holds ``model.keras`` and ``config.yaml``; its
    config gives the views, size and HU window. A bare ``.keras`` file is read for its input
    names and shapes, with the default HU window (the XprospeCT window, [-1000, 1000]). A
    SavedModel folder (``xprospect export``) gives them in its model card.

    A model is a program, so only what can be trusted is loaded (:mod:`xprospect.trust`):
    ``.keras`` files in Keras's safe mode, and SavedModels that are xprospect exports whose graphs
    contain only allowed ops, checked before anything is loaded.

    Args:
        path: Run folder, ``.keras`` file or SavedModel version folder.
        trust: Load a model that fails the checks (a warning says so); for ``.keras`` files,
            with safe mode off. Only for models from a source you trust.

    Raises:
        MissingDataError: Nothing loadable at the path.
        UntrustedModelError: The model cannot be verified and ``trust`` is False.
    """
    from xprospect.trust import load_keras_model

    p = Path(path)
    if not p.exists():
        raise MissingDataError("no model here", p)
    meta: dict[str, Any] = {}
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    if p.is_dir() and (p / "model.keras").exists():
        config_path = p / "config.yaml"
        if config_path.exists():
            from xprospect.config.engine import read_yaml_file

            meta = read_yaml_file(config_path) or {}
            if not isinstance(meta, dict):
                raise ConfigError("a run's config must be a mapping of sections", config_path)
            hu_window = resolve_hu_window(meta.get("data", {}).get("hu_window", "xprospect"))
        model_path = p / "model.keras"
    elif p.suffix == ".keras":
        model_path = p
    elif p.is_dir() and (p / "saved_model.pb").exists():
        return _saved_model_predictor(p, trust=trust)
    else:
        raise MissingDataError(
            "expected a run folder with model.keras, a .keras file or a SavedModel folder", p
        )
    register_custom_objects()
    model = load_keras_model(model_path, trust=trust)
    inputs = xray_inputs(model)
    names = tuple(getattr(t, "name", "").split(":")[0] for t in inputs)
    views = tuple(v for v in VIEWS if v in names) or ("frontal",)
    size = int(inputs[0].shape[1])
    return Predictor(
        model, views=views, size=size, hu_window=hu_window, source=str(p), metadata=meta
    )


@contextlib.contextmanager
def without_graph_rewrites() -> Iterator[None]:
    """TensorFlow's graph optimiser (Grappler) off while the block runs, as it was after.

    A function is optimised when a call instantiates it under options it was not instantiated
    with. For a served model's forward pass the rewrites do not pay for themselves: with the
    demo model (64^3) the first call takes 0.40 s instead of 0.50 s, the process's peak is about
    20 MB lower, and later calls take 0.115 s instead of 0.102 s (``benchmarks/README.md``,
    start-up). Training keeps them. The options are the process's: a call in another thread
    while the block runs is instantiated without rewrites too.
    """
    from xprospect.utils import grappler_options

    with grappler_options({"disable_meta_optimizer": True}):
        yield


def _saved_model_predictor(path: Path, *, trust: bool) -> Predictor:
    from xprospect.trust import verify_saved_model

    card = verify_saved_model(path, trust=trust)  # before TensorFlow loads (and runs) anything
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    views = tuple(v for v in VIEWS if v in specs)
    size = int(next(iter(specs.values())).shape[1])
    hu_window = resolve_hu_window(card.get("hu_window", "xprospect"))
    fov_mm = float(card.get("fov_mm", DEFAULT_FOV_MM))

    def call(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        # Every call, not only the first: TensorFlow keys a function's instantiation by these
        # options, so restoring them would instantiate (and optimise) it again at the next call,
        # whose outputs would differ from the first's in the last bits.
        with without_graph_rewrites():
            out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        return next(iter(out.values())).numpy()

    return Predictor(
        call,
        views=views,
        size=size,
        hu_window=hu_window,
        fov_mm=fov_mm,
        source=str(path),
        metadata={"model_card": card} if card else {},
    )
