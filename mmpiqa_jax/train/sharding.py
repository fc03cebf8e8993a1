"""Device mesh and sharding strategies: one code path from one CPU to a multi-host pod.

The mesh has two axes, `data` and `model`. `sharding.strategy` decides what they carry:

    replicate  parameters, Adam moments and EMA whole on every chip; the batch split over
               data x model (every device is a data-parallel replica).
    fsdp       the same batch split; every large tensor (parameter, moment, EMA) split over
               data x model along its largest divisible dimension and all-gathered by XLA
               where a block uses it (ZeRO-3 / FSDP).
    fsdp_tp    tensor parallel on `model` (attention's out-projection row-parallel, so its input
               is split by whole heads; the MLP column- then row-parallel), FSDP over `data` on
               another dimension; the batch split over `data` only.

Rules are keyed on the parameter's path (`.../attn/out_proj/kernel`), so a moment or an EMA
copy, whose path ends the same, is laid out as its parameter. Tensors smaller than
`sharding.min_size` elements stay replicated: splitting them costs more in collectives than it
saves in memory. The model code carries no sharding annotations; XLA's partitioner propagates
these layouts and inserts the collectives.
"""
from __future__ import annotations

import dataclasses
import logging
import re

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmpiqa_jax.errors import UserError

DATA, MODEL = "data", "model"
REPLICATE, FSDP, FSDP_TP = "replicate", "fsdp", "fsdp_tp"
STRATEGIES = (REPLICATE, FSDP, FSDP_TP)
MIN_SIZE = 2**16

# fsdp_tp: the `model` split of a leaf's TRAILING dimensions, by path suffix (the kernels are
# [in, out]). The fused in_proj [W, 3W] (columns q | k | v) has no contiguous split into whole
# heads of each of q, k and v, so it is FSDP-only. The partitioner then does not keep attention
# fully head-parallel: XLA logs "involuntary full rematerialization" on its reshapes and some
# activations are replicated (tools/sharding_memory.py: fsdp_tp's temporaries exceed fsdp's).
TP_RULES = (
    (r"(^|/)attn/out_proj/kernel(/value)?$", (MODEL, None)),   # row-parallel
    (r"(^|/)mlp/c_fc/kernel(/value)?$", (None, MODEL)),        # column-parallel
    (r"(^|/)mlp/c_fc/bias(/value)?$", (MODEL,)),
    (r"(^|/)mlp/c_proj/kernel(/value)?$", (MODEL, None)),      # row-parallel
)
# A stacked leaf's leading axis is the layer axis that a scan slices: never split it.
_STACKED = re.compile(r"resblocks/(?!\d)")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """`config.sharding`: the strategy's name and the size below which tensors stay whole."""
    name: str = REPLICATE
    min_size: int = MIN_SIZE

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise UserError(f"sharding.strategy={self.name!r} is not one of {STRATEGIES}")
        if not isinstance(self.min_size, (int, np.integer)) or self.min_size < 0:
            raise UserError(f"sharding.min_size={self.min_size!r} must be an integer >= 0")

    @property
    def data_axes(self) -> tuple[str, ...]:
        """The mesh axes the batch is split over: every axis that is not tensor parallel."""
        return (DATA,) if self.name == FSDP_TP else (DATA, MODEL)


DEFAULT_STRATEGY = Strategy()


def strategy_of(config) -> Strategy:
    """The `Strategy` of a training config (no `sharding` section, as older configs: replicate)."""
    section = config.get("sharding", None) or {}
    return Strategy(section.get("strategy", REPLICATE), section.get("min_size", MIN_SIZE))


def make_mesh(data: int = -1, model: int = 1, devices=None) -> jax.sharding.Mesh:
    """A `(data, model)` mesh; `data=-1` takes every device left after `model`."""
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    if model < 1 or n % model:
        raise UserError(f"mesh.model={model} must be >= 1 and divide the {n} devices")
    if data == -1:
        data = n // model
    if data * model != n:
        raise UserError(f"mesh.data={data} x mesh.model={model} != {n} devices")
    # Auto axes: the partitioner propagates shardings through the model code, which stays
    # free of sharding annotations.
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=auto, devices=devices)


def data_parallel_size(mesh, strategy: Strategy = DEFAULT_STRATEGY) -> int:
    """How many ways the batch is split: the product of the strategy's data axes."""
    return int(np.prod([mesh.shape[a] for a in strategy.data_axes]))


def path_str(path) -> str:
    """A pytree key path as `a/b/0/c`, the form the rules match."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def leaf_spec(path: str, shape, mesh_shape, strategy: Strategy) -> P:
    """The PartitionSpec of one leaf of shape `shape` at `path` under `strategy`."""
    spec = [None] * len(shape)
    if strategy.name == REPLICATE or int(np.prod(shape, dtype=np.int64)) < strategy.min_size:
        return P(*spec)
    if strategy.name == FSDP_TP and mesh_shape[MODEL] > 1:
        for pattern, trailing in TP_RULES:
            if re.search(pattern, path) and len(shape) >= len(trailing):
                lead = len(shape) - len(trailing)
                for d, axis in enumerate(trailing):
                    if axis and shape[lead + d] % mesh_shape[axis] == 0:
                        spec[lead + d] = axis
                break
    axes = strategy.data_axes
    size = int(np.prod([mesh_shape[a] for a in axes]))
    if size > 1:
        stacked = _STACKED.search(path) is not None
        free = [d for d in range(len(shape)) if spec[d] is None and not (stacked and d == 0)]
        for dim in sorted(free, key=lambda d: -shape[d]):
            if shape[dim] % size == 0:
                spec[dim] = axes if len(axes) > 1 else axes[0]
                break
    return P(*spec)


def tree_shardings(mesh, abstract_tree, strategy: Strategy = DEFAULT_STRATEGY):
    """NamedShardings of a pytree of arrays or `ShapeDtypeStruct`s under `strategy`."""
    shape = dict(mesh.shape)
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, leaf_spec(path_str(p), np.shape(x), shape, strategy)),
        abstract_tree)


@dataclasses.dataclass(frozen=True)
class LayoutSummary:
    """What a strategy left whole: large leaves by path, and the share of bytes split."""
    replicated: tuple[str, ...]    # leaves of >= min_size elements kept whole
    small: int                     # leaves below min_size (whole by rule)
    bytes_total: int
    bytes_per_device: int

    def describe(self, strategy: Strategy) -> str:
        head = (f"sharding.strategy={strategy.name}: {self.bytes_per_device / 2**20:.1f} MiB "
                f"of {self.bytes_total / 2**20:.1f} MiB of state per device; "
                f"{self.small} leaves under {strategy.min_size} elements replicated")
        if not self.replicated:
            return head + "; no large leaf replicated"
        return head + f"; {len(self.replicated)} large leaves replicated: " + ", ".join(
            self.replicated)


def summarize(abstract_tree, shardings, strategy: Strategy) -> LayoutSummary:
    """The `LayoutSummary` of `abstract_tree` laid out by `shardings`."""
    replicated, small, total, per_device = [], 0, 0, 0
    leaves = jax.tree_util.tree_flatten_with_path(abstract_tree)[0]
    for (path, x), s in zip(leaves, jax.tree.leaves(shardings)):
        shape = np.shape(x)
        size = int(np.prod(shape, dtype=np.int64))
        # PRNG key arrays have no numpy dtype; they are a few bytes.
        nbytes = 0 if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else (
            size * np.dtype(x.dtype).itemsize)
        total += nbytes
        shard = int(np.prod(s.shard_shape(shape), dtype=np.int64)) if shape else 1
        per_device += shard * (nbytes // max(size, 1))
        if s.is_fully_replicated:
            if size < strategy.min_size:
                small += 1
            else:
                replicated.append(f"{path_str(path)} {list(shape)}")
    return LayoutSummary(tuple(replicated), small, total, per_device)


def log_layout(abstract_tree, shardings, strategy: Strategy) -> LayoutSummary:
    """Logs (process 0) which tensors `strategy` left replicated; returns the summary."""
    summary = summarize(abstract_tree, shardings, strategy)
    if jax.process_index() == 0:
        logging.info("%s", summary.describe(strategy))
    return summary


def batch_sharding(mesh, strategy: Strategy = DEFAULT_STRATEGY) -> NamedSharding:
    """Leading (batch) dimension over the strategy's data axes, the rest replicated."""
    return NamedSharding(mesh, P(strategy.data_axes))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(mesh, local_batch: dict, strategy: Strategy = DEFAULT_STRATEGY) -> dict:
    """Assemble each process's share of the batch into global arrays split over the data axes.

    Every process passes only the examples it read (its shard of the data); the global batch
    size is the local one times the number of processes.
    """
    sharding = batch_sharding(mesh, strategy)

    def put(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, local_batch)


def from_host(host_tree, shardings):
    """Host arrays put straight into their shards: each process fills only the shards its own
    devices hold, from its own copy (no gather, no cross-host equality check per leaf)."""
    def put(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
    return jax.tree.map(put, host_tree, shardings)


def with_shardings(abstract_tree, shardings):
    """`ShapeDtypeStruct`s that carry their sharding: the target of a sharded Orbax restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_tree, shardings)
