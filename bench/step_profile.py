"""Where a kvae training step's time goes, on the throughput benchmark's model
(MLP 784-H-20 VAE, Bernoulli pixels, batch 128, XLA as `compile()` does).

In one process, interleaved over rounds, images/s of:

    forward        the loss (encoder, 1 draw, decoder, log-densities, KL)
    + backward     its gradients
    + optimizer    Adam's update (the whole step but the metrics)
    train_step     kvae's step: + the four metric trackers
    fit            `model.fit` on `kvae.data.pipeline` (+ tf.data, Keras's loop, callbacks)

each compiled with XLA and run on one fixed batch for `--steps` steps (fit: one epoch of the same
number of steps), so the differences are what each stage adds.

    python bench/step_profile.py [--hidden 400] [--steps 320] [--rounds 3]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, LATENT = 128, 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", default=[400], type=lambda t: [int(u) for u in t.split(",")])
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import kvae

    keras.utils.set_random_seed(0)
    model = kvae.VAE((28, 28, 1), LATENT, encoder=kvae.networks.mlp(args.hidden),
                     decoder=kvae.networks.mlp(args.hidden[::-1]))
    model.compile(optimizer="adam")
    x = (np.random.default_rng(0).uniform(size=(args.steps * BATCH, 28, 28, 1)) > 0.5).astype("float32")
    batch = tf.constant(x[:BATCH])
    variables = model.trainable_variables
    model.optimizer.build(variables)
    seed = tf.constant([0, 1], tf.int64)

    @tf.function(jit_compile=True)
    def forward(xb):
        return model._step(xb, seed, True)[0]

    @tf.function(jit_compile=True)
    def backward(xb):
        with tf.GradientTape() as tape:
            loss = model._step(xb, seed, True)[0]
        return tape.gradient(loss, variables)

    @tf.function(jit_compile=True)
    def optimizer(xb):
        with tf.GradientTape() as tape:
            loss = model._step(xb, seed, True)[0]
        model.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function(jit_compile=True)
    def train_step(xb):
        return model.train_step(xb)

    def loop(fn):
        def run():
            out = None
            for _ in range(args.steps):
                out = fn(batch)
            tf.nest.map_structure(lambda t: t.numpy(), out)
        return run

    def fit():
        model.fit(kvae.data.pipeline(x, batch_size=BATCH, seed=0, drop_remainder=True), epochs=1, verbose=0)

    stages = {"forward": loop(forward), "+ backward": loop(backward), "+ optimizer": loop(optimizer),
              "train_step (+ metrics)": loop(train_step), "fit (+ tf.data, Keras loop)": fit}
    for run in stages.values():  # compile everything first
        run()
    rates = {name: [] for name in stages}
    for _ in range(args.rounds):
        for name, run in stages.items():
            start = time.perf_counter()
            run()
            rates[name].append(args.steps * BATCH / (time.perf_counter() - start))
    print(f"MLP 784-{'-'.join(map(str, args.hidden))}-{LATENT}, batch {BATCH}, {args.steps} steps, "
          f"{args.rounds} interleaved rounds (images/s, every round, then the median; ms per step)")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {', '.join(f'{v:.0f}' for v in values)} | {median:.0f} | {1000 * BATCH / median:.2f} |")


if __name__ == "__main__":
    main()
