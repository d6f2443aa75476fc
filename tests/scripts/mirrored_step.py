"""Run in a fresh process: split the CPU into 2 logical devices, then compare
a MirroredStrategy fit with a single-device fit from the same weights, for
every objective and for the power spherical posterior. Prints one JSON line.

argv[1] (optional): comma-separated names of the cases to run."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kvae  # noqa: E402

x = (load_digits().images[:64, ..., None] / 16.0 > 0.5).astype("float32")

# The floor and the capacity are set where the two replicas' batch means
# straddle them (the untrained encoder's KL is 0.03 to 0.17 nats per
# dimension, 0.2 to 0.4 in all), so a per-replica max/abs differs from the
# global one: with per-replica statistics these two cases differ by ~1e-3.
CASES = {
    "elbo_adam": (dict(), "adam", None),
    "elbo": (dict(), "sgd", None),
    "beta": (dict(beta=4.0), "sgd", None),
    "free_bits": (dict(free_bits=0.06), "sgd", None),
    "capacity": (dict(capacity_gamma=5.0), "sgd", 0.2),
    "iwae": (dict(objective="iwae", num_samples=4), "sgd", None),
    "power_spherical": (dict(posterior="power_spherical", prior="spherical_uniform"), "sgd", None),
}


def make(kwargs, optimizer, capacity):
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, encoder=kvae.networks.mlp([32]),
                     decoder=kvae.networks.mlp([32]), **kwargs)
    if capacity is not None:
        model.objective.capacity.assign(capacity)
    # jit_compile=False on both sides: XLA draws another noise stream than the
    # CPU kernel for the same seed, and XLA is off under a strategy anyway.
    model.compile(optimizer=keras.optimizers.Adam(1e-3) if optimizer == "adam" else keras.optimizers.SGD(0.05),
                  jit_compile=False)
    return model


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
wanted = sys.argv[1].split(",") if len(sys.argv) > 1 else list(CASES)
results = {}
for name in wanted:
    kwargs, optimizer, capacity = CASES[name]
    single = make(kwargs, optimizer, capacity)
    initial = single.get_weights()
    single.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)  # 4 steps
    with strategy.scope():
        mirrored = make(kwargs, optimizer, capacity)
    mirrored.set_weights(initial)
    mirrored.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    results[name] = {
        "replicas": strategy.num_replicas_in_sync,
        "steps": int(mirrored.optimizer.iterations.numpy()),
        "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights())),
        "max_update": max(float(np.abs(a - b).max()) for a, b in zip(initial, single.get_weights())),
    }

# noise: each replica gets its own rows of one global draw
from kvae import replicas  # noqa: E402

seed = tf.constant([3, 4], tf.int64)
per_replica = strategy.run(lambda: replicas.noise(seed, 4, [2]))
parts = [t.numpy() for t in strategy.experimental_local_results(per_replica)]
whole = replicas.noise(seed, 8, [2]).numpy()
results["noise_replicas_differ"] = not np.allclose(parts[0], parts[1])
results["noise_matches_single_device"] = bool(np.array_equal(np.concatenate(parts), whole))
print(json.dumps(results))
