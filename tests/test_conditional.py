"""A conditional VAE generates the class it is asked for."""

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression

import kvae


def test_conditional_samples_follow_their_label(digits):
    x, y = digits
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, num_classes=10,
                     encoder=kvae.networks.mlp([128]), decoder=kvae.networks.mlp([128]))
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x, y, batch_size=64, epochs=40, verbose=0)

    # A small independent judge: logistic regression on the real binarised digits.
    judge = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
    assert judge.score(x.reshape(len(x), -1), y) > 0.9

    labels = np.repeat(np.arange(10), 30)
    images = model.sample(len(labels), seed=0, labels=labels).numpy()
    accuracy = np.mean(judge.predict(images.reshape(len(images), -1)) == labels)
    # Chance is 0.1; a model that ignored its labels would sit near it.
    print(f"conditional accuracy {accuracy:.3f}")
    assert accuracy > 0.5, accuracy

    # one label for all samples works too
    sevens = model.sample(30, seed=1, labels=7).numpy()
    assert np.mean(judge.predict(sevens.reshape(30, -1)) == 7) > 0.5
