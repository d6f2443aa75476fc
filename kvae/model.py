"""The VAE: a subclassed `keras.Model` that composes the parts (networks,
likelihood, posterior, prior, objective) and trains them with `fit`.

A batch flows: x -> encoder body -> posterior head -> q(z|x) params -> k draws
z (kvae.replicas noise) -> decoder body -> p(x|z) params -> `objectives.Terms`
(log p(x|z), log p(z), log q(z|x), KL) -> `objective.loss(terms)` [B] -> the
sum over the batch / the global batch size. The VAE does not branch on the
types of its parts: each part checks the others in its own `check(model)`.
"""

import random

import keras
import numpy as np
import tensorflow as tf

from kvae import distributions, fused, networks, objectives, priors, progress, replicas
from kvae.data import checks

__all__ = ["VAE"]

#: `VAE.compile`'s XLA setting on one device when `jit_compile` is not given.
#: The test suite sets it False in its own process (a third less time per
#: compiled model); the commands, notebooks and README blocks it runs in
#: subprocesses keep XLA.
JIT_DEFAULT = True

#: `VAE.compile`'s steps_per_execution when not given, on one device:
#: training steps per call into TensorFlow, fewer Python round trips
#: (bench/RESULTS.md); `fit` lowers it to an epoch's steps when it knows them.
STEPS_PER_EXECUTION_DEFAULT = 32


def _checked_sizes(input_shape, latent_dim, num_classes):
    """(input_shape tuple, latent_dim int, num_classes int or None), or a ValueError naming the bad one."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}.") from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be non-empty and positive, got {input_shape!r}.")
    if int(latent_dim) < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
    if num_classes is not None and int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (or None), got {num_classes}.")
    return shape, int(latent_dim), None if num_classes is None else int(num_classes)


@keras.saving.register_keras_serializable(package="kvae")
class VAE(keras.Model):
    """A variational autoencoder whose encoder parametrises q(z|x) and whose
    decoder parametrises p(x|z), trained by `fit` on an objective, by default
    the (beta-)ELBO

        loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z))

    with the reparameterisation trick, averaged over `objective.num_samples`
    draws of z per example. The KL is analytic where TFP has it, a Monte Carlo
    estimate otherwise. Metrics (nats per example): `loss`, `elbo` (the true
    ELBO, beta = 1), `reconstruction` (-E_q log p(x|z)) and `kl`. Data for
    `fit` / `evaluate`: `x`, or `(x, labels)` for a conditional model (labels
    are ignored by an unconditional one); arrays are checked whole first.

    Args:
        input_shape: tuple of int, one example's shape, e.g. (28, 28, 1).
        latent_dim: int >= 1, dimension of z.
        encoder, decoder: 'mlp', 'conv', a `kvae.networks` spec, or a Keras
            layer (the decoder maps z, with one-hot labels appended if
            conditional, to the likelihood's parameter shape).
        likelihood, posterior, prior: a `kvae.registry` name (see the README's
            table) or an instance of `kvae.distributions.Likelihood`,
            `kvae.distributions.Posterior`, `kvae.priors.Prior`.
        objective: 'elbo', 'iwae' or a `kvae.objectives.Objective`.
        beta, num_samples, free_bits, capacity_gamma: shorthand options of a
            named objective (`kvae.objectives.get`); give them to an object instead.
        num_classes: int >= 2 or None: conditional on labels in [0, num_classes).
        seed: int, seeds the reparameterisation noise (with the step number).

    Example:
        >>> import kvae
        >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, objective="iwae", num_samples=5)
        >>> model.objective
        IWAE(num_samples=5)
        >>> tuple(model.sample(3, seed=0).shape)
        (3, 8, 8, 1)
    """

    def __init__(self, input_shape, latent_dim, encoder="mlp", decoder="mlp", likelihood="bernoulli",
                 posterior="diagonal", prior="standard_normal", beta=None, num_classes=None, num_samples=None,
                 objective="elbo", free_bits=None, capacity_gamma=None, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.data_shape, self.latent_dim, self.num_classes = _checked_sizes(input_shape, latent_dim, num_classes)
        self.seed = int(seed)
        self.objective = objectives.get(objective, beta=beta, num_samples=num_samples, free_bits=free_bits,
                                        capacity_gamma=capacity_gamma)
        self.objective.build()
        self.likelihood = distributions.get_likelihood(likelihood)
        self.posterior = distributions.get_posterior(posterior)
        self.encoder_spec = networks.get(encoder, "encoder")
        self.decoder_spec = networks.get(decoder, "decoder")
        self.encoder = networks.build_encoder(self.encoder_spec, self.data_shape)
        self.param_shape = self.likelihood.param_shape(self.data_shape)
        self.decoder = networks.build_decoder(
            self.decoder_spec, self.latent_dim + (self.num_classes or 0), self.param_shape)
        self.flatten = keras.layers.Flatten()
        self.posterior_head = keras.layers.Dense(
            self.posterior.num_params(self.latent_dim), dtype="float32", name="posterior_head")
        self.prior = priors.get_prior(prior, self.latent_dim, self.data_shape)
        for part in (self.posterior, self.prior, self.objective):
            part.check(self)
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "elbo", "reconstruction", "kl")]
        self._build_weights()

    # ----------------------------------------------------------- construction
    @property
    def conditional(self):
        """Whether the model is conditional on labels (num_classes is set)."""
        return self.num_classes is not None

    def _build_weights(self):
        """Create every weight now (one pass on zeros), so that `.keras` loading,
        `summary` and `tf.distribute` see a fully built model."""
        x = tf.zeros((1,) + self.data_shape)
        labels = tf.zeros((1,), tf.int32) if self.conditional else None
        params = self.decode_params(self.encode_params(x, labels)[..., : self.latent_dim], labels)
        if tuple(params.shape[1:]) != self.param_shape:
            raise ValueError(f"The decoder outputs shape {tuple(params.shape[1:])}, but the {self.likelihood.name} "
                             f"likelihood needs {self.param_shape} for data of shape {self.data_shape}.")
        self.prior.distribution(self)
        self.built = True

    @property
    def encoder_variables(self):
        """The trainable variables of q(z|x): the encoder body, the posterior
        head and the posterior's own layers (a flow's); the rest (decoder,
        prior) are the generative model's. DReG treats the two differently."""
        parts = [self.encoder, self.posterior_head] + ([self.posterior] if isinstance(self.posterior, keras.layers.Layer) else [])
        return [v for part in parts for v in part.trainable_variables]

    def build(self, input_shape=None):  # weights are created in __init__
        self.built = True

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {**super().get_config(), "input_shape": list(self.data_shape), "latent_dim": self.latent_dim,
                "encoder": ser(self.encoder_spec), "decoder": ser(self.decoder_spec),
                "likelihood": ser(self.likelihood), "posterior": ser(self.posterior), "prior": ser(self.prior),
                "objective": ser(self.objective), "num_classes": self.num_classes, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------- forward
    def _one_hot(self, labels):
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError(f"This VAE is conditional (num_classes={self.num_classes}): pass labels, "
                             "e.g. fit on (x, labels) or sample(n, labels=...).")
        # A gather from the identity, not tf.one_hot: TFLite's full-int8 ONE_HOT
        # keeps its raw on/off values under the concat's scale (1 reads as ~3).
        return tf.gather(tf.eye(self.num_classes), tf.cast(tf.reshape(labels, [-1]), tf.int32))

    def check_inputs(self, x, labels=None):
        """x as a tensor, after checking its per-example shape and, for a
        conditional model, that labels are given (ValueError otherwise)."""
        x = tf.convert_to_tensor(x)
        checks.check_shape(x.shape, self.data_shape)
        if self.conditional and labels is None:
            self._one_hot(None)  # raises the explanatory error
        return x

    def encode_params(self, x, labels=None, training=False):
        """The posterior's parameters, float32 [B, num_params], for inputs x [B, *input_shape]."""
        h = self.flatten(self.encoder(x, training=training))
        if self.conditional:
            h = tf.concat([h, tf.cast(self._one_hot(labels), h.dtype)], axis=-1)
        return tf.cast(self.posterior_head(h), tf.float32)

    def decode_params(self, z, labels=None, training=False):
        """The likelihood's parameters, float32 [B, *param_shape], at latents z [B, latent_dim]."""
        if self.conditional:
            z = tf.concat([z, tf.cast(self._one_hot(labels), z.dtype)], axis=-1)
        return tf.cast(self.decoder(z, training=training), tf.float32)

    def encode(self, x, labels=None):
        """(mode, stddev) of q(z|x), each [B, latent_dim]: the mode is the mean
        for the Gaussian posteriors and the mean direction mu (on the sphere)
        for the power spherical one; stddev are the marginal standard deviations."""
        return self.posterior.mode_stddev(self.encode_params(self.check_inputs(x, labels), labels))

    def decode(self, z, labels=None):
        """E[x|z] in the data's shape [B, *input_shape]: pixel probabilities (Bernoulli) or means."""
        return self.likelihood.mean(self.decode_params(tf.cast(z, tf.float32), labels))

    def reconstruct(self, x, labels=None):
        """decode(the posterior mode of z given x): [B, *input_shape]."""
        return self.decode(self.encode(x, labels)[0], labels)

    def sample(self, n, seed=None, labels=None):
        """n draws z ~ p(z) decoded to E[x|z]: [n, *input_shape]; the same seed
        gives the same images. `labels` (conditional): one int or n ints."""
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}.")
        if self.conditional and labels is not None:
            labels = np.broadcast_to(np.asarray(labels, np.int32), (int(n),))
            checks.check_label_range(labels, self.num_classes)
        seed = random.randrange(2**31) if seed is None else int(seed)
        z = self.prior.distribution(self).sample(int(n), seed=tf.constant([seed, 0], tf.int32))
        return self.decode(z, labels)

    def call(self, inputs, training=False):
        """Reconstruction of `x`, or of `(x, labels)` for a conditional model."""
        x, labels = (inputs if isinstance(inputs, (tuple, list)) else (inputs, None))
        return self.reconstruct(x, labels if self.conditional else None)

    # ---------------------------------------------------------- objective
    def terms(self, x, labels=None, k=1, seed=(0, 0), training=False, q_params=None, prior=None):
        """The `objectives.Terms` of x [B, ...] at k draws z_i ~ q(z|x): log
        p(x|z_i), log p(z_i), log q(z_i|x) (each [k, B]) and KL(q || p) [B].
        The noise is this replica's rows of one global draw from the stateless
        `seed` (kvae.replicas). `q_params` [B, num_params], if given, replaces
        the encoder's output (kvae.anomaly's likelihood regret optimises them);
        `prior`, if given, is `self.prior.distribution(self)` computed once by
        the caller (evaluation: the VampPrior's pseudo-inputs encoded once)."""
        batch_size = tf.shape(x)[0]
        eps = tf.transpose(replicas.noise(seed, batch_size, [k, self.latent_dim]), [1, 0, 2])  # [k, B, d]
        if prior is None:
            prior = self.prior.distribution(self)  # once: the VampPrior encodes its pseudo-inputs here
        if q_params is None:
            q_params = self.encode_params(x, labels, training=training)
        z, log_qz = self.posterior.sample_and_log_prob(q_params, eps, seed)
        rep_labels = None if labels is None else tf.tile(tf.reshape(labels, [-1]), [tf.shape(z)[0]])
        x_params = self.decode_params(tf.reshape(z, [-1, self.latent_dim]), rep_labels, training=training)
        x_params = tf.reshape(x_params, tf.concat([tf.shape(z)[:2], self.param_shape], 0))
        log_px_z = self.likelihood.log_prob(x_params, tf.cast(x, tf.float32), len(self.data_shape))
        log_pz = prior.log_prob(z)
        kl = objectives.kl_divergence(self.posterior.distribution(q_params), prior, log_qz, log_pz)
        return objectives.Terms(log_px_z, log_pz, log_qz, kl, q_params, self.posterior, self.prior, z)

    @property
    def metrics(self):
        return self.trackers

    def _step(self, data_batch, seed, training):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data_batch)
        labels = labels if self.conditional else None
        x = self.check_inputs(x, labels)
        terms = self.terms(x, labels, self.objective.num_samples, seed, training)
        per_example = self.objective.loss(terms)
        # Gradients are summed over replicas: divide by the GLOBAL batch size.
        loss = tf.reduce_sum(per_example) / tf.cast(replicas.global_batch_size(tf.shape(x)[0]), tf.float32)
        return loss, per_example, terms

    def _logs(self, per_example, terms):
        for tracker, value in zip(self.trackers, (per_example, -(terms.reconstruction + terms.kl),
                                                  terms.reconstruction, terms.kl)):
            tracker.update_state(value)
        return replicas.keras_logs({m.name: m.result() for m in self.metrics}, self.distribute_strategy)

    def train_step(self, data_batch):
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        with tf.GradientTape(persistent=self.objective.persistent_tape) as tape:
            loss, per_example, terms = self._step(data_batch, seed, True)
            scaled = self.optimizer.scale_loss(loss)
        grads = self.objective.gradients(tape, scaled, terms, self)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._logs(per_example, terms)

    def test_step(self, data_batch):
        # A fixed seed: the validation ELBO of every epoch uses common random numbers.
        _, per_example, terms = self._step(data_batch, tf.constant([self.seed, -1], tf.int64), False)
        return self._logs(per_example, terms)

    def make_train_function(self, force=False):
        """Keras's train function; with XLA on one device, one that runs an
        execution's batches in one XLA program (kvae.fused)."""
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if fused.applies(self):
            self.train_function = fused.train_function(self, self.train_function)
        return self.train_function

    def compile(self, optimizer="adam", jit_compile=None, steps_per_execution=None, **kwargs):
        """`keras.Model.compile`, with no `loss` (the objective is the loss).
        `jit_compile=None`: XLA on one device (faster on CPU, bench/RESULTS.md),
        Keras's "auto" under a strategy (XLA cannot reach mirrored variables).
        `steps_per_execution=None`: `STEPS_PER_EXECUTION_DEFAULT` on one
        device, at most an epoch's steps in `fit`; 1 under a strategy (Keras
        3.15 can fail with more there: "You must feed a value for placeholder
        tensor", keras-team/keras#19246; `kvae train` sets it itself)."""
        if kwargs.get("loss") is not None:
            raise ValueError("A VAE computes its own loss (its objective's): do not pass `loss`.")
        if jit_compile is None:
            jit_compile = "auto" if tf.distribute.has_strategy() else JIT_DEFAULT
        self._auto_steps = steps_per_execution is None
        if steps_per_execution is None:
            steps_per_execution = 1 if tf.distribute.has_strategy() else STEPS_PER_EXECUTION_DEFAULT
        super().compile(optimizer=optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution,
                        **kwargs)
        if self._auto_steps:  # a reloaded .keras file decides again, as here
            self._compile_config.config["steps_per_execution"] = None

    def _fit_steps_per_execution(self, x, batch_size, steps_per_epoch):
        """With the default steps_per_execution, no more than the epoch's steps
        (when they are known): Keras's progress bar overshoots otherwise."""
        if not getattr(self, "_auto_steps", False) or self.steps_per_execution == 1:
            return
        steps = steps_per_epoch
        if steps is None and isinstance(x, tf.data.Dataset):
            steps = int(x.cardinality()) if int(x.cardinality()) > 0 else None
        elif steps is None and hasattr(x, "shape") and len(x.shape):
            steps = -(-int(x.shape[0]) // int(batch_size or 32))
        wanted = STEPS_PER_EXECUTION_DEFAULT if steps is None else max(1, min(STEPS_PER_EXECUTION_DEFAULT, steps))
        if wanted != self.steps_per_execution:
            self.steps_per_execution = wanted
            self.train_function = self.test_function = None

    def compile_from_config(self, config):
        """Recompile on `.keras` load (the optimizer state comes back); jit re-decided as in `compile`."""
        config = keras.saving.deserialize_keras_object(config)
        if config.get("jit_compile") is True:
            config.pop("jit_compile")
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------- data checks up front
    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        checks.check_for_model(self, x, y)
        if validation_data is not None:
            checks.check_for_model(self, *checks.split_validation(validation_data), where="the validation data")
        self._fit_steps_per_execution(x, kwargs.get("batch_size"), kwargs.get("steps_per_epoch"))
        return super().fit(x, y, *args, validation_data=validation_data, **progress.with_progbar(kwargs))

    def evaluate(self, x=None, y=None, *args, **kwargs):
        checks.check_for_model(self, x, y)
        return super().evaluate(x, y, *args, **progress.with_progbar(kwargs))
