"""Keras's own layer harness (`keras.src.testing.TestCase.run_layer_test`, its default checks:
serialisation, a functional model, mixed precision, training) on every public Keras layer of kvae,
or the reason a check does not apply."""

import pytest
from keras.src import testing

from kvae import networks, priors
from kvae.flows import MaskedDense, made_masks

#: layers whose forward pass needs the VAE that owns them, so run_layer_test (a layer called on
#: tensors alone) does not apply; their save/reload and mixed precision are tested with their model
NOT_CALLED_ALONE = {
    "VampPrior": "its distribution is the encoder's posteriors at its pseudo-inputs: distribution(model)",
    "HierarchicalVampPrior": "as the VampPrior, through the two-layer posterior (tests/test_hierarchical.py)",
    "IAFPosterior": "a posterior: its methods take the encoder's parameters and noise (tests/test_flows.py)",
    "HierarchicalPosterior": "a posterior, whose networks are made for the model's latent_dim on first use",
}


class _Harness(testing.TestCase):
    def runTest(self):  # a TestCase instance for its assertion methods
        pass


CASES = [
    (MaskedDense, {"mask": made_masks(3, 4)[0].tolist()}, (2, 3), (2, 4), 2),
    (networks.GatedDense, {"units": 4}, (2, 3), (2, 4), 2),
    (priors.SphericalUniform, {"latent_dim": 3}, (2, 3), (2,), 0),
    (priors.StandardNormal, {"latent_dim": 3}, (2, 3), (2,), 0),
    (priors.MixtureOfGaussians, {"latent_dim": 3, "num_components": 2}, (2, 3), (2,), 3),
]


@pytest.mark.parametrize("cls, kwargs, input_shape, output_shape, weights", CASES, ids=[c[0].__name__ for c in CASES])
def test_public_layers_pass_keras_run_layer_test(cls, kwargs, input_shape, output_shape, weights):
    _Harness().run_layer_test(cls, init_kwargs=kwargs, input_shape=input_shape, expected_output_shape=output_shape,
                              expected_num_trainable_weights=weights)


def test_every_public_layer_is_tested_or_says_why_not():
    import inspect

    import keras

    from kvae import flows, hierarchical

    public = {name for module in (networks, priors, flows, hierarchical) for name in module.__all__
              if inspect.isclass(getattr(module, name)) and issubclass(getattr(module, name), keras.layers.Layer)}
    tested = {c[0].__name__ for c in CASES}
    assert public - {"Prior"} <= tested | set(NOT_CALLED_ALONE), public - tested
