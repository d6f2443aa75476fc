"""`Dataset`: the train / validation / test splits that every loader returns."""

from dataclasses import dataclass, field

__all__ = ["Dataset"]


@dataclass
class Dataset:
    """Train / validation / test splits of one dataset, pixels in [0, 1].

    Args:
        name: str; source: str, where it was found (a path or a loader).
        train, validation, test: (x float32 [N, *input_shape], labels int32 [N] or None).
        num_classes: int or None; notes: list of str (scaling, splits made).
        test_is_validation: bool, True when there is no test split and the
        validation split stands in for it (binarised MNIST without its test file).
    """

    name: str
    source: str
    train: tuple
    validation: tuple
    test: tuple
    num_classes: int = None
    notes: list = field(default_factory=list)
    test_is_validation: bool = False

    @property
    def input_shape(self):
        return tuple(self.validation[0].shape[1:])  # always in memory (train may stream)

    def summary(self):
        sizes = ", ".join(f"{k} {len(getattr(self, k)[0])}" for k in ("train", "validation", "test"))
        notes = "".join(f"; {n}" for n in self.notes)
        return f"{self.name} {self.input_shape} from {self.source}: {sizes}{notes}"
