"""Start-up of a multi-process run: `jax.distributed.initialize` when several processes run.

    startup = initialize(coordinator, num_processes, process_id)   # first thing of a command

Which processes: the flags or their JAX_* variables; else SLURM (`srun`, SLURM_NTASKS > 1) or a
Cloud TPU slice of several hosts, as jax detects them; else one process.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import NamedTuple

import jax

from mmpiqa_jax.errors import UserError

ENV_COORDINATOR, ENV_NUM, ENV_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
# jax's SLURM detection (jax._src.clusters.slurm_cluster) needs all of these.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")
TPU_HOST_VARS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")  # GKE: comma-separated hosts


class Startup(NamedTuple):
    """How this process joined the run: method is explicit, slurm, tpu, single or already."""
    method: str
    process_id: int | None = None
    num_processes: int | None = None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"${name}={value!r} must be an integer") from None


def _slurm_tasks() -> int:
    if not all(v in os.environ for v in SLURM_VARS):
        return 1
    return _env_int("SLURM_NTASKS") or 1


def _tpu_slice_hosts() -> int:
    """Hosts of this Cloud TPU slice as jax sees them (1 when not on a Cloud TPU VM)."""
    # pylint: disable=import-outside-toplevel,protected-access
    try:
        # Private, but what jax.distributed.initialize() itself runs; `import jax` has set it.
        from jax._src import cloud_tpu_init
        from jax._src.clusters import cloud_tpu_cluster as tpu
    except ImportError:
        return 1
    if not cloud_tpu_init.running_in_cloud_tpu_vm:
        return 1
    for var in TPU_HOST_VARS:
        if os.environ.get(var):
            return len(os.environ[var].split(","))
    try:
        if tpu.GceTpuCluster.is_env_present():
            return len(tpu.GceTpuCluster._get_worker_list_in_slice())
    except Exception as e:  # pylint: disable=broad-except  # a metadata server that fails
        logging.warning("could not read the TPU slice's workers from the metadata server: %s", e)
    return 1


def _use_gloo_on_cpu() -> None:
    # gloo ships with jaxlib; the setting affects the CPU client only.
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 300) -> Startup:
    """Joins the multi-process run this process belongs to, if any (see the module doc).

    Arguments left None are read from the JAX_* variables; only some given raises a UserError.
    """
    if jax.distributed.is_initialized():
        return Startup("already", jax.process_index(), jax.process_count())
    explicit = {
        "--coordinator": coordinator or os.environ.get(ENV_COORDINATOR) or None,
        "--num-processes": num_processes if num_processes is not None else _env_int(ENV_NUM),
        "--process-id": process_id if process_id is not None else _env_int(ENV_ID),
    }
    given = {k: v for k, v in explicit.items() if v is not None}
    if given:
        missing = [k for k in explicit if k not in given]
        if missing:
            raise UserError(
                f"multi-process start-up: {', '.join(given)} given without {', '.join(missing)} "
                f"(flags or ${ENV_COORDINATOR}, ${ENV_NUM}, ${ENV_ID})")
        n, i = explicit["--num-processes"], explicit["--process-id"]
        if n < 1 or not 0 <= i < n:
            raise UserError(f"--num-processes={n} and --process-id={i}: need 0 <= id < N")
        _use_gloo_on_cpu()
        jax.distributed.initialize(coordinator_address=explicit["--coordinator"],
                                   num_processes=n, process_id=i,
                                   initialization_timeout=timeout_s)
        return Startup("explicit", i, n)
    for method, count in (("slurm", _slurm_tasks), ("tpu", _tpu_slice_hosts)):
        if count() > 1:
            _use_gloo_on_cpu()
            jax.distributed.initialize(initialization_timeout=timeout_s)
            return Startup(method, jax.process_index(), jax.process_count())
    return Startup("single")


def initialize_from_args(args: argparse.Namespace) -> Startup:
    """`initialize` from the multi-process flags (`cli.train.add_distributed_arguments`)."""
    return initialize(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                      getattr(args, "process_id", None))
