"""Multi-process start-up: ``jax.distributed.initialize`` exactly when the environment asks.

Explicit (any platform, e.g. CPU processes on one machine or GPU hosts, one process per host)::

    JAX_COORDINATOR_ADDRESS=10.0.0.2:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 spark-jax train ...

TPU slices: ``SPARK_JAX_DISTRIBUTED=1`` (set by tpu_scripts/launch.sh), and JAX discovers the
coordinator and process ids from the TPU metadata itself.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)
_initialized = False


def maybe_initialize() -> bool:
    """Initialises jax.distributed once if the environment describes several processes."""
    global _initialized
    if _initialized:
        return True
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        try:
            num = int(os.environ["JAX_NUM_PROCESSES"])
            pid = int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError) as e:
            raise ValueError(
                "JAX_COORDINATOR_ADDRESS is set, so JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers too"
            ) from e
        if not 0 <= pid < num:
            raise ValueError(f"JAX_PROCESS_ID={pid} must lie in [0, JAX_NUM_PROCESSES={num})")
        # CPU processes exchange collectives through gloo (the default since jax 0.5; older jax
        # had none and failed at the first cross-process reduction). GPU/TPU ignore this setting.
        if jax.config.values.get("jax_cpu_collectives_implementation") in (None, "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num, process_id=pid)
    elif os.environ.get("SPARK_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    else:
        return False
    _initialized = True
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def is_main_process() -> bool:
    """Only process 0 logs, writes metrics and reports."""
    return jax.process_index() == 0
