"""The VAE: a subclassed `keras.Model` trained by `fit` on the (beta-)ELBO."""

import random

import keras
import numpy as np
import tensorflow as tf

from kvae import distributions, networks, objectives, priors


@keras.saving.register_keras_serializable(package="kvae")
class VAE(keras.Model):
    """A variational autoencoder whose encoder parametrises q(z|x) and whose
    decoder parametrises p(x|z), trained by `fit` on

        loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || p(z))

    with the reparameterisation trick (one sample per example). The KL is
    analytic where TFP has it, a one-sample Monte Carlo estimate otherwise.
    Metrics (nats per example): `loss`, `elbo` (the true ELBO, beta = 1),
    `reconstruction` (-E_q log p(x|z)) and `kl`.

    Data for `fit` / `evaluate`: `x`, or `(x, labels)` for a conditional model
    (labels are ignored by an unconditional one).

    Args:
        input_shape: shape of one example, e.g. (28, 28, 1).
        latent_dim: int >= 1, dimension of z.
        encoder: 'mlp', 'conv', a `kvae.networks` spec, or a Keras layer mapping
            x to features.
        decoder: 'mlp', 'conv', a spec, or a Keras layer mapping z (concatenated
            with one-hot labels if conditional) to the likelihood's parameters.
        likelihood: 'bernoulli', 'continuous_bernoulli', 'gaussian',
            'gaussian_learned', or a `kvae.distributions.Likelihood`.
        posterior: 'diagonal', 'full_covariance', or 'power_spherical' (a
            hyperspherical S-VAE latent space; use it with the
            'spherical_uniform' prior).
        prior: 'standard_normal', 'mixture', 'vamp', 'spherical_uniform', or a
            `kvae.priors.Prior`.
        beta: float >= 0, weight of the KL term.
        num_classes: int or None; if set, the model is conditional on integer
            labels in [0, num_classes).
        num_samples: int >= 1, samples of z per example in training.
        objective: 'elbo' (the beta-ELBO, averaged over `num_samples`) or
            'iwae' (the importance-weighted bound L_k with k = `num_samples`;
            beta and free bits do not apply to it).
        free_bits: float >= 0 nats; if > 0, each latent dimension's KL (batch
            mean) counts at least this much in the loss (diagonal posterior and
            standard normal prior only).
        capacity_gamma: float >= 0; if > 0, the KL term is
            capacity_gamma * |KL - C| (Burgess et al., 2018) with the capacity C
            in `model.kl_capacity` (0 at first; `CapacityAnnealing` raises it).
        seed: int, seeds the reparameterisation noise (with the step number).

    Example:
        >>> import kvae
        >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
        >>> tuple(model.sample(3, seed=0).shape)
        (3, 8, 8, 1)
    """

    def __init__(
        self,
        input_shape,
        latent_dim,
        encoder="mlp",
        decoder="mlp",
        likelihood="bernoulli",
        posterior="diagonal",
        prior="standard_normal",
        beta=1.0,
        num_classes=None,
        num_samples=1,
        objective="elbo",
        free_bits=0.0,
        capacity_gamma=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        try:
            self.data_shape = tuple(int(s) for s in input_shape)
        except TypeError:
            raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}.") from None
        if not self.data_shape or any(s < 1 for s in self.data_shape):
            raise ValueError(f"input_shape must be non-empty and positive, got {input_shape!r}.")
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        if not float(beta) >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        if num_classes is not None and int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (or None), got {num_classes}.")
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"Unknown objective {objective!r}. Choose 'elbo' or 'iwae'.")
        if not float(free_bits) >= 0:
            raise ValueError(f"free_bits must be >= 0, got {free_bits}.")
        if float(free_bits) > 0 and objective == "iwae":
            raise ValueError("free_bits applies to the 'elbo' objective, not to 'iwae'.")
        if not float(capacity_gamma) >= 0:
            raise ValueError(f"capacity_gamma must be >= 0, got {capacity_gamma}.")
        if float(capacity_gamma) > 0 and (objective == "iwae" or float(free_bits) > 0):
            raise ValueError("capacity_gamma replaces the KL term of the 'elbo' objective: "
                             "it cannot be combined with 'iwae' or free_bits.")
        self.num_samples = int(num_samples)
        self.objective = objective
        self.free_bits = float(free_bits)
        self.capacity_gamma = float(capacity_gamma)
        self.kl_capacity = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="kl_capacity")
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.seed = int(seed)
        # The KL weight the step uses: starts at beta; callbacks (KL warm-up) may
        # change it between steps without retracing. Not a Keras weight: not saved.
        self.kl_weight = tf.Variable(self.beta, trainable=False, dtype=tf.float32, name="kl_weight")

        self.likelihood = distributions.get_likelihood(likelihood)
        self.posterior = distributions.get_posterior(posterior)
        self.encoder_spec = networks.get(encoder, "encoder")
        self.decoder_spec = networks.get(decoder, "decoder")
        self.encoder = networks.build_encoder(self.encoder_spec, self.data_shape)
        self.param_shape = self.likelihood.param_shape(self.data_shape)
        self.decoder = networks.build_decoder(
            self.decoder_spec, self.latent_dim + (self.num_classes or 0), self.param_shape
        )
        self.flatten = keras.layers.Flatten()
        self.posterior_head = keras.layers.Dense(
            self.posterior.num_params(self.latent_dim), dtype="float32", name="posterior_head"
        )
        self.prior = priors.get_prior(prior, self.latent_dim, self.data_shape)
        if self.conditional and isinstance(self.prior, priors.VampPrior):
            raise ValueError("The VampPrior is not supported for a conditional model.")
        spherical_q = isinstance(self.posterior, distributions.PowerSpherical)
        spherical_p = isinstance(self.prior, priors.SphericalUniform)
        if spherical_q != spherical_p:
            raise ValueError(
                "A hyperspherical latent space needs both posterior='power_spherical' and "
                "prior='spherical_uniform' (z lives on the unit sphere); got the "
                f"{self.posterior.name!r} posterior with the {type(self.prior).__name__} prior."
            )
        if self.free_bits > 0 and not (isinstance(self.posterior, distributions.DiagonalGaussian)
                                       and isinstance(self.prior, priors.StandardNormal)):
            raise ValueError("free_bits needs the 'diagonal' posterior and the 'standard_normal' prior "
                             "(it floors each dimension's analytic KL).")

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self._build_weights()

    # ----------------------------------------------------------- construction
    @property
    def conditional(self):
        return self.num_classes is not None

    def _build_weights(self):
        """Create every weight now (one pass on zeros), so that `.keras` loading,
        `summary` and `tf.distribute` see a fully built model."""
        x = tf.zeros((1,) + self.data_shape)
        labels = tf.zeros((1,), tf.int32) if self.conditional else None
        params = self.decode_params(self.encode_params(x, labels)[..., : self.latent_dim], labels)
        if tuple(params.shape[1:]) != self.param_shape:
            raise ValueError(
                f"The decoder outputs shape {tuple(params.shape[1:])}, but the "
                f"{self.likelihood.name} likelihood needs {self.param_shape} for data of "
                f"shape {self.data_shape}."
            )
        self.prior.distribution(self)
        self.built = True

    def build(self, input_shape=None):  # weights are created in __init__
        self.built = True

    def get_config(self):
        config = super().get_config()
        ser = keras.saving.serialize_keras_object
        config.update(
            input_shape=list(self.data_shape),
            latent_dim=self.latent_dim,
            encoder=ser(self.encoder_spec),
            decoder=ser(self.decoder_spec),
            likelihood=ser(self.likelihood),
            posterior=ser(self.posterior),
            prior=ser(self.prior),
            beta=self.beta,
            num_classes=self.num_classes,
            num_samples=self.num_samples,
            objective=self.objective,
            free_bits=self.free_bits,
            capacity_gamma=self.capacity_gamma,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------- forward
    def _one_hot(self, labels):
        if not self.conditional:
            return None
        if labels is None:
            raise ValueError(
                f"This VAE is conditional (num_classes={self.num_classes}): pass labels, "
                "e.g. fit on (x, labels) or sample(n, labels=...)."
            )
        # A gather from the identity, not tf.one_hot: TFLite's full-int8 ONE_HOT
        # keeps its raw on/off values under the concat's scale (1 reads as ~3).
        return tf.gather(tf.eye(self.num_classes), tf.cast(tf.reshape(labels, [-1]), tf.int32))

    def encode_params(self, x, labels=None, training=False):
        """The posterior's parameters (float32, [B, num_params]) for inputs x."""
        h = self.flatten(self.encoder(x, training=training))
        if self.conditional:
            h = tf.concat([h, tf.cast(self._one_hot(labels), h.dtype)], axis=-1)
        return tf.cast(self.posterior_head(h), tf.float32)

    def decode_params(self, z, labels=None, training=False):
        """The likelihood's parameters (float32, [B, *param_shape]) at latents z."""
        if self.conditional:
            z = tf.concat([z, tf.cast(self._one_hot(labels), z.dtype)], axis=-1)
        return tf.cast(self.decoder(z, training=training), tf.float32)

    def encode(self, x, labels=None):
        """Posterior mean and standard deviation of z given x, each [B, latent_dim]."""
        return self.posterior.mean_stddev(self.encode_params(self._as_input(x), labels))

    def decode(self, z, labels=None):
        """E[x|z]: pixel probabilities (Bernoulli) or means, in the data's shape."""
        return self.likelihood.mean(self.decode_params(tf.cast(z, tf.float32), labels))

    def reconstruct(self, x, labels=None):
        """decode(posterior mean of z given x)."""
        mean, _ = self.encode(x, labels)
        return self.decode(mean, labels)

    def sample(self, n, seed=None, labels=None):
        """n draws z ~ p(z), decoded to E[x|z]. The same seed gives the same images.

        For a conditional model `labels` is one int (every sample of that class)
        or n ints.
        """
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}.")
        if self.conditional and labels is not None:
            labels = np.broadcast_to(np.asarray(labels, np.int32), (int(n),))
            self._check_labels(labels)
        seed = random.randrange(2**31) if seed is None else int(seed)
        z = self.prior.distribution(self).sample(int(n), seed=tf.constant([seed, 0], tf.int32))
        return self.decode(z, labels)

    def call(self, inputs, training=False):
        """Reconstruction of `x`, or of `(x, labels)` for a conditional model."""
        x, labels = (inputs if isinstance(inputs, (tuple, list)) else (inputs, None))
        return self.reconstruct(x, labels if self.conditional else None)

    def _as_input(self, x):
        x = tf.convert_to_tensor(x)
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(
                f"Input shape {tuple(x.shape[1:])} (per example) does not match the "
                f"model's input_shape {self.data_shape}."
            )
        return x

    def _check_labels(self, labels):
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"Labels must be integers in [0, {self.num_classes}); got values in "
                f"[{labels.min()}, {labels.max()}]."
            )

    # ---------------------------------------------------------- objective
    @property
    def metrics(self):
        return [self.loss_tracker, self.elbo_tracker, self.reconstruction_tracker, self.kl_tracker]

    def _unpack(self, data):
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = self._as_input(x)
        labels = labels if self.conditional else None
        if self.conditional and labels is None:
            self._one_hot(None)  # raises the explanatory error
        return x, labels

    def replica_noise(self, seed, batch_size, event_shape):
        """Standard normal noise [batch_size, *event_shape] for this replica.

        One global draw of [batch_size * replicas, ...] from the stateless `seed`
        is the same on every replica; each replica takes its own slice. So the
        replicas get different noise, and a 2-replica step sees exactly the noise
        a single device would see for the same global batch.
        """
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        replica_id = ctx.replica_id_in_sync_group if ctx is not None else 0
        shape = tf.concat([[batch_size * replicas], event_shape], axis=0)
        # Philox named explicitly rather than TF's "auto_select". Note that XLA's
        # sampler gives another stream than the CPU kernel for the same seed, so
        # the noise (not its distribution) depends on jit_compile.
        eps = tf.random.stateless_normal(shape, seed=seed, alg="philox")
        start = tf.cast(replica_id, tf.int32) * batch_size
        return eps[start : start + batch_size], replicas

    def log_importance_weights(self, x, labels, eps, training=False, prior=None, seed=(0, 0)):
        """log p(x|z), log p(z) and log q(z|x) (each [k, B]) at k draws z ~ q(z|x):
        z = g(params, eps) for noise eps [k, B, latent_dim], or drawn from the
        stateless `seed` by posteriors without a Gaussian reparameterisation.
        Also returns the posterior parameters and z. `prior`: the prior
        distribution if the caller has built it already."""
        k = tf.shape(eps)[0]
        prior = self.prior.distribution(self) if prior is None else prior
        q_params = self.encode_params(x, labels, training=training)
        z = self.posterior.sample(q_params, eps, seed)
        rep_labels = None if labels is None else tf.tile(tf.reshape(labels, [-1]), [k])
        x_params = self.decode_params(tf.reshape(z, [-1, self.latent_dim]), rep_labels, training=training)
        x_params = tf.reshape(x_params, tf.concat([tf.shape(z)[:2], self.param_shape], 0))
        log_px_z = self.likelihood.distribution(x_params, len(self.data_shape)).log_prob(tf.cast(x, tf.float32))
        log_pz = prior.log_prob(z)
        log_qz = self.posterior.distribution(q_params).log_prob(z)
        return log_px_z, log_pz, log_qz, q_params, z

    def compute_terms(self, x, labels=None, seed=(0, 0), training=False):
        """Per-example (reconstruction, kl, loss) averaged over `num_samples`
        draws of z, and the number of replicas in sync. `loss` is the
        objective the step minimises (before the division by the batch)."""
        batch_size = tf.shape(x)[0]
        k = self.num_samples
        eps, replicas = self.replica_noise(seed, batch_size, [k, self.latent_dim])
        eps = tf.transpose(eps, [1, 0, 2])  # [k, B, d]
        prior = self.prior.distribution(self)  # once: the VampPrior encodes its pseudo-inputs here
        # For seed-sampled posteriors, each replica folds its id into the seed.
        ctx = tf.distribute.get_replica_context()
        replica_seed = tf.random.experimental.stateless_fold_in(
            tf.cast(seed, tf.int64), 0 if ctx is None else ctx.replica_id_in_sync_group)
        log_px_z, log_pz, log_qz, q_params, z = self.log_importance_weights(
            x, labels, eps, training, prior, seed=replica_seed)
        reconstruction = -tf.reduce_mean(log_px_z, axis=0)
        try:  # analytic KL where TFP has it
            kl = objectives.kl_divergence(self.posterior.distribution(q_params), prior)
        except ValueError:
            kl = tf.reduce_mean(log_qz - log_pz, axis=0)
        if self.objective == "iwae":
            loss = -objectives.iwae_bound(log_px_z, log_pz, log_qz)
        elif self.capacity_gamma > 0:
            loss = reconstruction + objectives.capacity_kl(kl, self.kl_capacity, self.capacity_gamma)
        elif self.free_bits > 0:
            kl_dims = self.posterior.kl_per_dim_to_standard_normal(q_params)
            loss = reconstruction + self.kl_weight * objectives.free_bits_kl(kl_dims, self.free_bits)
        else:
            loss = objectives.beta_vae_loss(reconstruction, kl, self.kl_weight)
        return reconstruction, kl, loss, replicas

    def _step(self, data, seed, training):
        x, labels = self._unpack(data)
        reconstruction, kl, per_example, replicas = self.compute_terms(x, labels, seed, training)
        # Gradients are summed over replicas: divide by the GLOBAL batch size.
        global_batch = tf.cast(tf.shape(x)[0] * replicas, tf.float32)
        loss = tf.reduce_sum(per_example) / global_batch
        return loss, per_example, reconstruction, kl

    def _update_metrics(self, per_example, reconstruction, kl):
        self.loss_tracker.update_state(per_example)
        self.elbo_tracker.update_state(-(reconstruction + kl))
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        logs = {m.name: m.result() for m in self.metrics}
        if _multi_worker(self.distribute_strategy):
            # Keras 3 reduces logs with strategy.reduce(MEAN, axis=0) in
            # multi-worker mode, which fails on scalars (tensorflow#72388).
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _train_seed(self):
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss, per_example, reconstruction, kl = self._step(data, self._train_seed(), True)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return self._update_metrics(per_example, reconstruction, kl)

    def test_step(self, data):
        # A fixed seed: the validation ELBO of every epoch uses common random numbers.
        seed = tf.constant([self.seed, -1], tf.int64)
        _, per_example, reconstruction, kl = self._step(data, seed, False)
        return self._update_metrics(per_example, reconstruction, kl)

    def compile(self, optimizer="adam", jit_compile=None, **kwargs):
        """`keras.Model.compile`. The VAE computes its own loss: pass no `loss`.

        `jit_compile=None` (the default) means XLA on a single device, which
        makes the MLP VAE's step ~1.3x faster on CPU (bench/RESULTS.md), and
        Keras's "auto" under a `tf.distribute` strategy (XLA cannot reach
        mirrored variables that live on other devices).
        """
        if kwargs.get("loss") is not None:
            raise ValueError("A VAE computes its own loss (the negative beta-ELBO): do not pass `loss`.")
        if jit_compile is None:
            jit_compile = "auto" if tf.distribute.has_strategy() else True
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        """Recompile on `.keras` load, so the optimizer (and its saved state)
        comes back. A saved `jit_compile=True` is re-decided as in `compile`,
        since the loading process may run under a distribution strategy."""
        config = keras.saving.deserialize_keras_object(config)
        if config.get("jit_compile") is True:
            config.pop("jit_compile")
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------- data checks up front
    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        self.check_data(x, y)
        if validation_data is not None:
            self.check_data(*_split_validation(validation_data), where="the validation data")
        return super().fit(x, y, *args, validation_data=validation_data, **_with_progbar(kwargs))

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self.check_data(x, y)
        return super().evaluate(x, y, *args, **_with_progbar(kwargs))

    def check_data(self, x, y=None, where="the inputs"):
        """Raise a ValueError (`kvae.data.DataError`) naming the problem if data
        cannot train this model: `kvae.data.check` with this model's shape,
        likelihood range and classes. Arrays are checked whole; a
        `tf.data.Dataset` by its first batch."""
        from kvae import data

        if isinstance(x, tf.data.Dataset):
            first = next(iter(x.take(1)), None)
            if first is None:
                raise ValueError("The dataset is empty.")
            x, y, _ = keras.utils.unpack_x_y_sample_weight(first)
            where = f"{where} (first batch of the dataset)"
        if x is None or not hasattr(x, "shape"):
            return  # generators, PyDatasets: the step checks shapes when it traces
        unit = f"the {self.likelihood.name} likelihood" if self.likelihood.unit_interval else None
        data.check(np.asarray(x), None if y is None else np.asarray(y), input_shape=self.data_shape,
                   unit_interval=unit, num_classes=self.num_classes, where=where)


def _with_progbar(kwargs):
    """kwargs with kvae's ProgbarLogger (step counts that do not overshoot
    with steps_per_execution > 1) unless the caller passes a progress bar or verbose=0."""
    from kvae import callbacks as kcallbacks

    if isinstance(kwargs.get("callbacks"), keras.callbacks.CallbackList):
        return kwargs  # fit's own validation pass: its list is made already
    callbacks = list(kwargs.get("callbacks") or [])
    if kwargs.get("verbose", "auto") != 0 and not any(
            isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        kwargs = dict(kwargs, callbacks=callbacks + [kcallbacks.ProgbarLogger()])
    return kwargs


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


def _split_validation(validation_data):
    if isinstance(validation_data, tf.data.Dataset):
        return validation_data, None
    if isinstance(validation_data, (tuple, list)):
        return validation_data[0], (validation_data[1] if len(validation_data) > 1 else None)
    return validation_data, None
