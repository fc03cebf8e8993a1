"""Device mesh and sharding strategies: one code path from one CPU to a multi-host pod.

The mesh has one axis, `data`, over which the batch is split. `sharding.strategy` lays out the
state by leaf path and shape: `replicate` (whole on every device) or `fsdp` (every tensor of at
least `sharding.min_size` elements split along its largest divisible dimension).
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

DATA = "data"
REPLICATE, FSDP = "replicate", "fsdp"
STRATEGIES = (REPLICATE, FSDP)
# A stacked leaf's leading axis is the layer axis that a scan slices: never split it.
_STACKED = re.compile(r"resblocks/(?!\d)")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """`config.sharding`: the strategy's name and the size below which tensors stay whole."""
    name: str = REPLICATE
    min_size: int = 2**16

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise UserError(f"sharding.strategy={self.name!r} is not one of {STRATEGIES}")
        if not isinstance(self.min_size, (int, np.integer)) or self.min_size < 0:
            raise UserError(f"sharding.min_size={self.min_size!r} must be an integer >= 0")


def strategy_of(config) -> Strategy:
    """The `Strategy` of a training config."""
    return Strategy(config.sharding.strategy, config.sharding.min_size)


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A one-axis `data` mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    # Auto: the partitioner propagates shardings through the model code.
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def path_str(path) -> str:
    """A pytree key path as `a/b/0/c`, the form the rules match."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def leaf_spec(path: str, shape, num_devices: int, strategy: Strategy) -> P:
    """The PartitionSpec of one leaf of shape `shape` at `path` under `strategy`."""
    spec = [None] * len(shape)
    if (strategy.name == REPLICATE or num_devices == 1
            or int(np.prod(shape, dtype=np.int64)) < strategy.min_size):
        return P(*spec)
    stacked = _STACKED.search(path) is not None
    free = [d for d in range(len(shape)) if not (stacked and d == 0)]
    for dim in sorted(free, key=lambda d: -shape[d]):
        if shape[dim] % num_devices == 0:
            spec[dim] = DATA
            break
    return P(*spec)


def tree_shardings(mesh, abstract_tree, strategy: Strategy = Strategy()):
    """NamedShardings of a pytree of arrays or `ShapeDtypeStruct`s under `strategy`."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, leaf_spec(path_str(p), np.shape(x), mesh.size,
                                                   strategy)), abstract_tree)


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


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) dimension over the devices, the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(mesh, local_batch: dict) -> dict:
    """Each process's share of the batch (what it read) as global arrays split over the devices."""
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, local_batch)


def from_host(host_tree, shardings):
    """Host arrays put into their shards, each process filling its own devices' from its copy."""
    def put(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
    return jax.tree.map(put, host_tree, shardings)


def with_shardings(abstract_tree, shardings):
    """`ShapeDtypeStruct`s that carry their sharding: the target of a sharded Orbax restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_tree, shardings)
