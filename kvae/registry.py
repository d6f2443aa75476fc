"""One way to look a part up by name: likelihoods, posteriors, priors,
networks, objectives and anomaly scores.

Each part module registers its names here (`register`), and everything that
turns a user's spec into a part (the VAE, the CLI, recipes) calls `get`. A spec
is a registered name, a Keras-serialised config (what `.keras` files hold), or
an instance of the kind's base class, which is returned as it is.

Example:
    >>> from kvae import registry
    >>> import kvae.distributions
    >>> registry.names("likelihood")
    ['bernoulli', 'continuous_bernoulli', 'gaussian', 'gaussian_learned']
    >>> registry.get("likelihood", "bernoulli").name
    'bernoulli'
    >>> registry.get("likelihood", "poisson")
    Traceback (most recent call last):
    ...
    ValueError: Unknown likelihood 'poisson'. Choose one of: bernoulli, continuous_bernoulli, gaussian, gaussian_learned.
"""

import importlib

__all__ = ["KINDS", "register", "get", "get_factory", "names"]

#: kind -> (module that registers it, base class name in that module)
KINDS = {
    "likelihood": ("kvae.distributions", "Likelihood"),
    "posterior": ("kvae.distributions", "Posterior"),
    "prior": ("kvae.priors", "Prior"),
    "network": ("kvae.networks", None),
    "objective": ("kvae.objectives", "Objective"),
    "score": ("kvae.anomaly", "Score"),
}
#: modules whose parts build on the ones above (posteriors and priors of flows, two layers): loaded with every kind
PLUGINS = ("kvae.flows", "kvae.hierarchical")
_TABLES = {kind: {} for kind in KINDS}


def register(kind, name):
    """Register a factory (a class or a function) under `name` for `kind`.

    Args:
        kind: str, one of `KINDS`.
        name: str, the name users pass (e.g. 'bernoulli').

    Returns:
        A decorator that registers its argument and returns it unchanged.
        `get(kind, name, **context)` calls the factory with the keyword
        arguments of that kind's context (e.g. `latent_dim` and `input_shape`
        for priors), which a factory may ignore by taking `**_`.
    """
    if kind not in _TABLES:
        raise ValueError(f"Unknown kind {kind!r}. Choose one of: {', '.join(KINDS)}.")

    def decorator(factory):
        _TABLES[kind][name] = factory
        return factory

    return decorator


def _load(kind):
    module, base = KINDS[kind]
    module = importlib.import_module(module)  # registers the kind's names
    if kind in ("posterior", "prior"):
        for plugin in PLUGINS:
            importlib.import_module(plugin)
    return None if base is None else getattr(module, base)


def names(kind):
    """The registered names of `kind`, sorted.

    Args:
        kind: str, one of `KINDS`.

    Returns:
        list of str.
    """
    _load(kind)
    return sorted(_TABLES[kind])


def get_factory(kind, name):
    """The factory registered under `name` for `kind` (to inspect its arguments).

    Args:
        kind: str, one of `KINDS`; name: str.

    Returns:
        The class or function `register` was given.
    """
    _load(kind)
    if name not in _TABLES[kind]:
        raise ValueError(f"Unknown {kind} {name!r}. Choose one of: {', '.join(names(kind))}.")
    return _TABLES[kind][name]


def get(kind, spec, **context):
    """The part `spec` names.

    Args:
        kind: str, one of `KINDS`.
        spec: a registered name, a serialised config (dict), or an instance of
            the kind's base class (returned as it is).
        **context: keyword arguments for name factories (see `register`).

    Returns:
        The part.

    Raises:
        ValueError naming the kind and the registered names if `spec` is not one.
    """
    import keras

    base = _load(kind)
    if base is not None and isinstance(spec, base):
        return spec
    if isinstance(spec, str):
        if spec not in _TABLES[kind]:
            raise ValueError(f"Unknown {kind} {spec!r}. Choose one of: {', '.join(names(kind))}.")
        return _TABLES[kind][spec](**context)
    if isinstance(spec, dict):
        obj = keras.saving.deserialize_keras_object(spec)
        if base is None or isinstance(obj, base):
            return obj
    raise ValueError(f"Cannot make a {kind} from {spec!r}.")
