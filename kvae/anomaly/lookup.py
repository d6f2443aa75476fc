"""Scores by name: `get`, `names`, `parameters` (through `kvae.registry`)."""

import inspect

from kvae import registry

__all__ = ["get", "names", "parameters", "from_options"]


def get(spec, **options):
    """A `Score` from a registered name (with its constructor's options) or an instance.

    Args:
        spec: str (see `names()`) or `Score`.
        **options: constructor arguments; None means not given.

    Returns:
        A `Score`.

    Example:
        >>> get("complexity", k=10)
        Complexity(base='nll', compressor='auto', k=10, seed=0)
    """
    options = {k: v for k, v in options.items() if v is not None}
    if options and not isinstance(spec, str):
        raise ValueError(f"Give {', '.join(options)} to the score object itself.")
    if isinstance(spec, str) and spec in names():
        unknown = [k for k in options if k not in parameters(spec)]
        if unknown:
            raise ValueError(f"The {spec} score takes no {', '.join(unknown)} (it takes "
                             f"{', '.join(parameters(spec))}).")
    return registry.get("score", spec, **options)


def parameters(name):
    """The options a registered score takes (its constructor's arguments).

    Args:
        name: str, a registered score name.

    Returns:
        list of str.

    Example:
        >>> parameters("typicality")
        ['k', 'group', 'seed']
    """
    factory = registry.get_factory("score", name)
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def names():
    """The registered score names.

    Returns:
        list of str.
    """
    return registry.names("score")


def from_options(spec, k=None, background=None):
    """The scores a command line asks for: comma-separated names, each given the
    options it takes. An option that none of the named scores uses is an error
    naming it (so a typo is not silently ignored).

    Args:
        spec: str, comma-separated registered names (e.g. 'elbo,nll'), or a list of names.
        k: int or None, importance samples (for the scores that take `k`).
        background: str, Path or kvae.VAE or None, likelihood_ratio's background model.

    Returns:
        list of `Score`.

    Raises:
        ValueError naming the score or the option.

    Example:
        >>> from_options("elbo,nll", k=7)
        [NegativeELBO(seed=0), NLL(k=7, seed=0)]
        >>> from_options("elbo", k=7)
        Traceback (most recent call last):
        ...
        ValueError: --k is not used by the elbo score
    """
    names_given = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if not names_given:
        raise ValueError("--score names no score")
    known = names()
    unknown = [n for n in names_given if n not in known]
    if unknown:
        raise ValueError(f"--score must be one of {', '.join(known)}, got {unknown[0]!r}")
    for flag, value, option in (("--k", k, "k"), ("--background", background, "background")):
        if value is not None and not any(option in parameters(n) for n in names_given):
            raise ValueError(f"{flag} is not used by the {', '.join(names_given)} score" if option == "k" else
                             f"--background is the likelihood_ratio score's background model, not used by "
                             f"{', '.join(names_given)}")
    return [get(n, **{o: v for o, v in (("k", k), ("background", background)) if o in parameters(n)})
            for n in names_given]
