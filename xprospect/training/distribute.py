"""Strategy choice, worker roles and distributed input that can be checkpointed.

What ``tf.train.Checkpoint`` can save of the input position (TensorFlow 2.21, verified by tests):

- default strategy: ``distribute_datasets_from_function`` returns the dataset itself and its
  iterator (``tf.data.Iterator``) is checkpointable.
- ``MirroredStrategy``: the ``DistributedIterator`` is not trackable, and with the default
  ``PER_WORKER`` replication each worker's iterator is a ``MultiDeviceIterator`` that cannot be
  saved either. With ``PER_REPLICA`` replication and ``experimental_fetch_to_device=False`` each
  replica gets its own pipeline and a plain ``tf.data`` iterator, which can: we save those.
- ``MultiWorkerMirroredStrategy`` and ``OneDeviceStrategy``: ``PER_REPLICA`` is refused, so
  nothing of the input can be saved; resuming rebuilds the deterministic pipeline and skips the
  batches already used (``load_dataset`` is deterministic given its seed, augmentation included).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import tensorflow as tf

from xprospect.errors import ConfigError
from xprospect.utils import grappler_options

__all__ = [
    "DataTracking",
    "distributed_step",
    "graph_rewrites",
    "input_options",
    "is_chief",
    "make_strategy",
    "replica_iterators",
    "return_freed_memory",
    "strategy_label",
    "worker_id",
]

log = logging.getLogger(__name__)


def distributed_step(
    strategy: tf.distribute.Strategy,
    replica_step: Callable[[Any], Mapping[str, Any]],
    *,
    batches: int | None = None,
) -> Callable[[Any], dict[str, Any]]:
    """The one ``tf.function`` step of every trainer: reads its input from the distributed
    iterator, runs ``replica_step`` on every replica and sums each value over the replicas.

    Args:
        strategy: The run's strategy.
        replica_step: ``replica_step(batch) -> {name: scalar}``; each scalar already divided by
            the global batch (``tf.nn.compute_average_loss``), so the sum is the global mean.
        batches: None: one batch per step; N: a list of N batches (gradient accumulation).

    Returns:
        ``step(iterator) -> {name: scalar}``.
    """

    @tf.function
    def step(iterator: Any) -> dict[str, Any]:
        batch = next(iterator) if batches is None else [next(iterator) for _ in range(batches)]
        values = strategy.run(replica_step, args=(batch,))
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in values.items()
        }

    return step


@contextlib.contextmanager
def graph_rewrites(networks: Iterable[Any]) -> Iterator[None]:
    """Grappler's settings while these networks train (the previous ones restored after).

    Grappler's remapper fuses a ``Pad`` into the convolution after it, deleting the ``Pad`` node
    although the convolution's gradient still reads its shape (TensorFlow 2.21); the pass then
    fails as a whole on the train step's graph, so it fuses nothing there and prints "remapper
    failed" (an error line) at the first step. The discriminators (X2CT's, CycleGAN's) pad
    explicitly to match PyTorch's symmetric padding, so a run that trains a network with a
    ``ZeroPadding`` layer runs without the remapper: the same graph, without the failure.
    """
    import keras

    pads = (keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)

    def padded(net: Any) -> bool:
        layers = net.layers if isinstance(net, keras.Model) else []
        return any(isinstance(layer, pads) or padded(layer) for layer in layers)

    if not any(padded(net) for net in networks):
        yield
        return
    with grappler_options({"remapping": False}):
        yield


SYSTEM_ALLOCATOR_ENV = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
"""TensorFlow's switch from its oneDNN allocator (a pool that never shrinks) to ``malloc``."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's default mmap threshold, made fixed: larger blocks are mapped and unmapped each time."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc malloc.h)


def return_freed_memory() -> dict[str, bool]:
    """Lets the memory of tensors a step has freed go back to the operating system.

    A oneDNN build of TensorFlow (the x86 wheels) serves large CPU tensors from a BFC pool that
    grows to the largest demand and is never returned, and glibc keeps freed heap blocks and
    raises its mmap threshold as large blocks are freed (up to 32 MiB), so they come from the
    heap next time. Peak RSS is then above the peak of the tensors alive at any moment. X2CT-GAN's
    train step at 128^3 (batch 1, float32): 8.5 GiB peak RSS with either setting alone or
    neither, 7.7 GiB with both, and 2.9 GiB instead of 8.4 GiB between steps; but the step
    takes 17 % longer in float32 and 49 % longer in bf16 (every large tensor is mapped and its
    pages zeroed anew), so the trainer calls this only with ``training.return_freed_memory``.

    Sets ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`` unless the environment sets it (TensorFlow reads it
    when it first allocates a tensor, so it works only before the process' first TensorFlow op)
    and fixes glibc's mmap threshold at 128 KiB (``mallopt``; other C libraries: skipped).

    Returns:
        Which of the two took effect: ``{"system_allocator": ..., "mmap_threshold": ...}``
        (``system_allocator`` is False when the environment asked for TensorFlow's pool).
    """
    os.environ.setdefault(SYSTEM_ALLOCATOR_ENV, "1")
    applied = {"system_allocator": os.environ[SYSTEM_ALLOCATOR_ENV] not in ("0", "false")}
    mmap = False
    name = ctypes.util.find_library("c")
    if name and "libc.so" in name:
        with contextlib.suppress(OSError, AttributeError):
            mmap = bool(ctypes.CDLL(name).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    applied["mmap_threshold"] = mmap
    return applied


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Creates the strategy named in ``training.strategy``.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names a cluster,
    ``MirroredStrategy`` with more than one GPU, else the default strategy.

    Must run before TensorFlow executes anything else in the process: multi-worker collectives
    and logical devices are configured at start-up.
    """
    tf_config = os.environ.get("TF_CONFIG", "")
    if name == "auto":
        if tf_config and json.loads(tf_config).get("cluster"):
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if name == "multiworker":
        if not tf_config:
            raise ConfigError("training.strategy: multiworker needs the TF_CONFIG variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Logical CPU devices share one memory: summing on one of them is as fast as collectives,
        # and unlike collectives (whose instance keys are process-global) it lets several
        # strategies live in one process.
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    if name == "one":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    raise ConfigError(f"training.strategy: unknown strategy {name!r}")


def strategy_label(strategy: tf.distribute.Strategy) -> str:
    """``default``, ``one``, ``mirrored`` or ``multiworker``."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one"
    return "default"


def _task(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None, Any]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, None
    return resolver.task_type, resolver.task_id, resolver.cluster_spec()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints and logs (the chief, or worker 0 without one)."""
    task_type, task_id, spec = _task(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = spec is not None and "chief" in spec.as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy) -> str:
    """``task_type-task_id`` of this process (``local`` outside a cluster)."""
    task_type, task_id, _ = _task(strategy)
    return "local" if task_type is None else f"{task_type}-{task_id}"


def input_options(strategy: tf.distribute.Strategy) -> tf.distribute.InputOptions | None:
    """Input options under which the per-replica iterators can be checkpointed, where possible.

    Only ``MirroredStrategy`` (one worker) accepts ``PER_REPLICA``; batches then stay on the host
    and are copied to each device inside the step, which is negligible next to a 3D conv step.
    """
    if strategy_label(strategy) == "mirrored":
        return tf.distribute.InputOptions(
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
            experimental_fetch_to_device=False,
        )
    return None


class DataTracking:
    """The checkpointable part of a (distributed) iterator, or None where nothing is.

    Attributes:
        trackable: A ``tf.train.Checkpoint`` holding ``replica_0``, ``replica_1``, ... (the
            per-replica ``tf.data`` iterators), or None.
        names: The replica names, to compare with what a checkpoint holds.
    """

    def __init__(self, iterator: Any) -> None:
        found = replica_iterators(iterator)
        self.names = [f"replica_{i}" for i in range(len(found or []))]
        self.trackable = (
            None if not found else tf.train.Checkpoint(**dict(zip(self.names, found, strict=True)))
        )


def replica_iterators(iterator: Any) -> list[Any] | None:
    """The ``tf.data`` iterators behind ``iterator`` that ``tf.train.Checkpoint`` can save.

    A plain ``tf.data.Iterator`` is returned as is. For a ``DistributedIterator`` the
    per-replica iterators exist only in ``PER_REPLICA`` mode; reaching them uses private
    attributes, so any mismatch (another TensorFlow version) returns None and resuming falls
    back to skipping batches.
    """
    if isinstance(iterator, tf.data.Iterator):
        return [iterator]
    inner = getattr(iterator, "_iterators", None)
    if not inner:
        return None
    found = [getattr(w, "_iterator", None) for w in inner]
    if all(isinstance(it, tf.data.Iterator) for it in found):
        return found
    return None
