"""One worker of a MultiWorkerMirroredStrategy run (TF_CONFIG set by the caller).
Trains for a few steps and saves its final weights to the .npz given as argv[1]."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kvae  # noqa: E402

x = (load_digits().images[:256, ..., None] / 16.0 > 0.5).astype("float32")
with strategy.scope():
    keras.utils.set_random_seed(int(sys.argv[2]))  # different per worker on purpose:
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3,  # the strategy must sync them
                     encoder=kvae.networks.mlp([32]), decoder=kvae.networks.mlp([32]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
initial = [w.copy() for w in model.get_weights()]
ds = tf.data.Dataset.from_tensor_slices(x).batch(32)  # global batch 32, sharded by the strategy
history = model.fit(ds, epochs=2, verbose=0)
np.savez(sys.argv[1], *model.get_weights(), steps=model.optimizer.iterations.numpy(),
         moved=max(float(np.abs(a - b).max()) for a, b in zip(initial, model.get_weights())),
         loss=np.array(history.history["loss"]))
