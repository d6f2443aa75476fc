"""`Subset`: the examples of one split of a source, scaled to [0, 1] and checked
as they are read; and `scale_of`, the pixel scale decided from a source's first rows."""

import numpy as np

from kvae.data.checks import pixel_scale
from kvae.data.errors import DataError

__all__ = ["Subset", "scale_of", "SAMPLE_ROWS"]

SAMPLE_ROWS = 10_000  # rows read up front to decide the pixel scale



class Subset:
    """The examples of `source` at `indices` (one split), scaled to [0, 1] as they are read.

    Args:
        source: a Source; indices: int array; divisor: the pixel scale
        (`kvae.data.pixel_scale`); unit: what needs values in [0, 1], or None;
        threshold: binarise (x > 0.5) after the checks.
    """

    def __init__(self, source, indices, divisor=1.0, unit=None, threshold=False):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.divisor, self.unit, self.threshold = float(divisor), unit, threshold
        channel = (1,) if len(source.shape) == 2 else ()
        self.shape = (len(self.indices), *source.shape, *channel)

    def __len__(self):
        return len(self.indices)

    @property
    def labels(self):
        """int32 labels of the split's examples, or None."""
        return None if self.source.labels is None else self.source.labels[self.indices]

    def read(self, positions):
        """float32 [B, *shape[1:]] of the examples at `positions` (0..len-1), checked.

        Args:
            positions: int array.

        Returns:
            numpy float32.
        """
        index = self.indices[np.asarray(positions, np.int64)]
        raw = self.source.read(index)
        x = raw.astype(np.float32)
        if self.divisor != 1:
            x /= self.divisor
        x = x.reshape((len(index), *self.shape[1:]))
        flat = x.reshape(len(x), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if self.unit:
            bad |= (flat.min(axis=1) < 0) | (flat.max(axis=1) > 1)
        if bad.any():
            j = int(np.argmax(bad))
            row = flat[j]
            what = ("holds NaN or Inf" if not np.isfinite(row).all() else
                    f"has values in [{row.min():g}, {row.max():g}] but {self.unit} needs [0, 1]"
                    + (" (integer pixels above 1 where the first rows were all 0/1)" if self.divisor == 1
                       and np.issubdtype(raw.dtype, np.integer) else ""))
            raise DataError(f"{self.source.name_of(int(index[j]))}: example {int(index[j])} {what}.")
        return (x > 0.5).astype(np.float32) if self.threshold else x

    def load(self):
        """Every example of the split, float32 (for the small held-out splits).

        Returns:
            numpy float32 [len, ...].
        """
        out = np.empty(self.shape, np.float32)
        for start in range(0, len(self), 4096):
            out[start:start + 4096] = self.read(np.arange(start, min(start + 4096, len(self))))
        return out



def scale_of(source):
    """The pixel scale of a source, from its first `SAMPLE_ROWS` examples
    (`kvae.data.pixel_scale`); later rows are checked as they are read.

    Args:
        source: a Source.

    Returns:
        (divisor, note or None).
    """
    divisor, note = pixel_scale([source.read(np.arange(min(source.n, SAMPLE_ROWS)))], source.where)
    return divisor, (f"{note} (decided from the first {min(source.n, SAMPLE_ROWS)} examples)" if note else None)

