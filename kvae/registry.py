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

__all__ = ["KINDS", "register", "unregister", "get", "get_factory", "names", "options_of", "build"]

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


def unregister(kind, name):
    """Remove a name registered for `kind` (a plugin's or a test's; kvae's own stay).

    Args:
        kind: str, one of `KINDS`; name: str.

    Raises:
        ValueError if `name` is not registered for `kind`.
    """
    _load(kind)
    if name not in _TABLES[kind]:
        raise ValueError(f"No {kind} {name!r} is registered.")
    del _TABLES[kind][name]


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


def options_of(kind, name):
    """The options a registered part takes: its factory's named arguments (not the kind's context).

    Args:
        kind: str, one of `KINDS`; name: str.

    Returns:
        list of str.

    Example:
        >>> options_of("objective", "elbo")
        ['beta', 'num_samples', 'free_bits', 'capacity_gamma']
    """
    import inspect

    factory = get_factory(kind, name)
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and not p.name.startswith("_") and p.name != "self" and p.name not in _CONTEXT.get(kind, ())]


#: the keyword arguments each kind's factories are given by kvae itself (not user options)
_CONTEXT = {"prior": ("latent_dim", "input_shape"), "network": ("role",)}


def build(kind, name, options=None, **context):
    """The part `name` made with a user's `options` (e.g. `--objective-option floor=2`) and
    the kind's context; an option the part does not take is an error, not ignored.

    Args:
        kind: str, one of `KINDS`; name: str, a registered name;
        options: dict or None, keyword arguments for the part's factory;
        **context: the kind's context (for priors: latent_dim, input_shape).

    Returns:
        The part.

    Raises:
        ValueError naming the part, the option and the options it takes.

    Example:
        >>> build("objective", "elbo", {"beta": 4.0})
        ELBO(beta=4.0, num_samples=1)
        >>> build("objective", "elbo", {"floor": 2})
        Traceback (most recent call last):
        ...
        ValueError: The objective 'elbo' takes no option 'floor' (it takes beta, num_samples, free_bits, capacity_gamma).
    """
    options = dict(options or {})
    takes = options_of(kind, name)
    for key in options:
        if key not in takes:
            raise ValueError(f"The {kind} {name!r} takes no option {key!r} "
                             f"(it takes {', '.join(takes) if takes else 'none'}).")
    return get_factory(kind, name)(**context, **options)
