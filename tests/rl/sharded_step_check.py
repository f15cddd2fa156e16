"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8: trains 2 steps on one device and
on a (2, 2, 2) mesh of 8 simulated CPU devices and prints the largest differences as JSON."""

import json
import sys

import jax
import numpy as np

from spark_jax.core.config_io import load_config
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.trainer import Trainer


def train(config, model, data, out, mesh):
    cfg = load_config(TrainConfig, config, [f"model={model}", f"data={data}", "steps=2", "seq_buckets=[256]",
                                            "batch_size=8", "grad_accum=2", f"mesh_shape={mesh}"])
    t = Trainer(cfg, out)
    rows = t.run(progress=False)
    params = {jax.tree_util.keystr(p): np.asarray(x)
              for p, x in jax.tree_util.tree_leaves_with_path(jax.device_get(t.state["params"]))}
    shardings = {str(x.sharding.spec) for x in jax.tree_util.tree_leaves(t.state["params"])}
    t.close()
    return rows, params, shardings


def micro_batch_sharding():
    """How XLA shards the micro-batches that split_micro makes from a batch sharded over 8 devices."""
    import jax.numpy as jnp

    from spark_jax.model.sharding import batch_sharding, make_mesh
    from spark_jax.rl.steps import split_micro

    mesh = make_mesh((2, 4, 1))
    batch = jax.device_put(jnp.zeros((16, 4)), batch_sharding(mesh, (16,)))
    fn = jax.jit(lambda b: split_micro({"x": b}, 2)["x"])
    return fn.lower(batch).compile().output_shardings.spec


def main(config, model, data, out):
    assert len(jax.devices()) == 8, jax.devices()
    rows1, p1, _ = train(config, model, data, f"{out}/single", "[1,1,1]")
    rows8, p8, specs = train(config, model, data, f"{out}/mesh", "[2,2,2]")
    metric_diff = max(abs(a[k] - b[k]) for a, b in zip(rows1, rows8) for k in a
                      if k not in ("tokens_per_s", "records_per_s", "step_time_s") and a[k] is not None)
    param_diff = max(float(np.abs(p1[k] - p8[k]).max()) for k in p1)
    micro_spec = str(micro_batch_sharding())
    print(json.dumps({"metric_diff": metric_diff, "param_diff": param_diff, "specs": sorted(specs), "micro_spec": micro_spec,
                      "loss": [r["loss"] for r in rows8]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
