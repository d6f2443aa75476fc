"""Run in a fresh process: split the CPU into 2 logical devices, then compare
a MirroredStrategy fit with a single-device fit from the same weights.
Prints one JSON line."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kvae  # noqa: E402

x = (load_digits().images[:64, ..., None] / 16.0 > 0.5).astype("float32")


def make(optimizer):
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, encoder=kvae.networks.mlp([32]),
                     decoder=kvae.networks.mlp([32]))
    # jit_compile=False on both sides: XLA draws another noise stream than the
    # CPU kernel for the same seed, and XLA is off under a strategy anyway.
    model.compile(optimizer=optimizer, jit_compile=False)
    return model


results = {}
for name, opt in [("sgd", lambda: keras.optimizers.SGD(0.05)), ("adam", lambda: keras.optimizers.Adam(1e-3))]:
    single = make(opt())
    initial = single.get_weights()
    single.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)  # 4 steps
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make(opt())
    mirrored.set_weights(initial)
    mirrored.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    results[name] = {
        "replicas": strategy.num_replicas_in_sync,
        "steps": int(mirrored.optimizer.iterations.numpy()),
        "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights())),
        "max_update": max(float(np.abs(a - b).max()) for a, b in zip(initial, single.get_weights())),
    }

# noise: each replica gets its own slice of one global draw
seed = tf.constant([3, 4], tf.int64)
per_replica = strategy.run(lambda: single.replica_noise(seed, 4, [2])[0])
parts = [t.numpy() for t in strategy.experimental_local_results(per_replica)]
whole = single.replica_noise(seed, 8, [2])[0].numpy()
results["noise_replicas_differ"] = not np.allclose(parts[0], parts[1])
results["noise_matches_single_device"] = bool(np.array_equal(np.concatenate(parts), whole))
print(json.dumps(results))
