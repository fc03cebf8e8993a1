"""Device mesh and shardings: one code path from one CPU to a multi-host pod.

The mesh has two axes: `data` (the batch is split over it) and `model` (large weight matrices
are split over it, FSDP-style, so that a model that does not fit one device still trains).
Everything else is replicated; XLA's partitioner inserts the collectives.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"


def make_mesh(data: int = -1, model: int = 1, devices=None) -> jax.sharding.Mesh:
    """A `(data, model)` mesh; `data=-1` takes every device left after `model`."""
    devices = jax.devices() if devices is None else list(devices)
    n = len(devices)
    if model < 1 or n % model:
        raise ValueError(f"mesh.model={model} must be >= 1 and divide the {n} devices")
    if data == -1:
        data = n // model
    if data * model != n:
        raise ValueError(f"mesh.data={data} x mesh.model={model} != {n} devices")
    # Auto axes: the partitioner propagates shardings through the model code, which stays
    # free of sharding annotations.
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=auto, devices=devices)


def param_spec(shape, model_size: int, min_size: int = 2**16) -> P:
    """Shard the largest dimension divisible by the `model` axis, for big matrices only.

    Small tensors (norms, biases, prompts) stay replicated: splitting them costs more in
    communication than it saves in memory.
    """
    if model_size == 1 or len(shape) < 2 or int(np.prod(shape)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % model_size == 0:
            spec = [None] * len(shape)
            spec[dim] = MODEL
            return P(*spec)
    return P()


def tree_shardings(mesh, abstract_tree):
    """NamedShardings for a pytree of arrays or `ShapeDtypeStruct`s (parameters, optimiser
    state)."""
    model_size = mesh.shape[MODEL]
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(np.shape(x), model_size)),
                        abstract_tree)


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) dimension over `data`, the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(mesh, local_batch: dict) -> dict:
    """Assemble each process's share of the batch into global arrays sharded over `data`.

    Every process passes only the examples it read (its shard of the data); the global batch
    size is the local one times the number of processes.
    """
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree.map(put, local_batch)


def with_shardings(abstract_tree, shardings):
    """`ShapeDtypeStruct`s that carry their sharding: the target of a sharded Orbax restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_tree, shardings)
