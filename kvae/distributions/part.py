"""`Part`: the shared base of posteriors and likelihoods."""

__all__ = ["Part"]


class Part:
    """The small base of posteriors and likelihoods: a `name`, keyword arguments,
    and Keras (de)serialisation (`get_config` returns every constructor argument)."""

    name = None

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
