"""Batch scoring at scale: stream a dataset through a model and write one row
per example to a columnar file, in constant memory (`kvae score`).

Columns: `index` (the example's position in the source), `label` (if the
source has labels), `mean` (the posterior's mode, `latent_dim` floats) and
the chosen scores from `kvae.anomaly` (e.g. `elbo`, the -ELBO at the
posterior mode; `nll`, -log p(x) importance sampled with k draws). Output:
a `.parquet` file (pyarrow; one row group per chunk), or a folder of `.npy`
shards (`COLUMN-00000.npy`, ..., and `scores.json` describing them). Either
appears whole when scoring ends, or not at all.

Example:
    >>> import numpy as np, tempfile, os, kvae
    >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    >>> x = (np.random.default_rng(0).uniform(size=(10, 8, 8, 1)) > 0.5).astype("float32")
    >>> out = os.path.join(tempfile.mkdtemp(), "scores")
    >>> info = score(model, x, out, verbose=0)
    >>> info["rows"], sorted(info["columns"])
    (10, ['elbo', 'index', 'mean'])
"""

import json
from pathlib import Path

import numpy as np

from kvae import files

__all__ = ["score", "read", "FORMATS"]

FORMATS = ("parquet", "npy")


def _chunks(data, labels, batch_size, binarize, seed):
    """(float32 batch, labels or None) from an array, a Subset or a SequentialSource, in order."""
    import tensorflow as tf

    from kvae import data as kdata

    if labels is True and isinstance(data, kdata.Subset):  # its source's labels
        labels = data.labels
    if isinstance(data, np.ndarray):
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size], None if labels is None else labels[start:start + batch_size]
        return
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # fixed: one draw per batch, a function of seed
    ds = kdata.pipeline(data, labels, batch_size, shuffle=False, seed=seed, dynamic_binarize=binarize,
                        epoch=epoch)
    for batch in ds.as_numpy_iterator():
        yield batch if isinstance(batch, tuple) else (batch, None)


def score(model, data, out, scores=("elbo",), labels=None, batch_size=1024, binarize=False, seed=0,
          chunk_rows=65_536, verbose=1):
    """Score every example of `data` with `model` and write the rows to `out`.

    Args:
        model: a `kvae.VAE`.
        data: float32 array [N, *input_shape] in [0, 1], a `kvae.data.Subset`
            or a `kvae.data.SequentialSource` (streamed: one batch in memory).
        out: a path ending in `.parquet`, or a folder for `.npy` shards.
        scores: names or instances from `kvae.anomaly` (scores that need a
            reference fit, e.g. typicality, are not taken here).
        labels: int [N] for an array (a conditional model needs them), True to
            take a streamed source's labels, or None.
        batch_size: examples per step; binarize: draw a fixed Bernoulli(x)
            binarisation (keyed by seed and batch) before scoring;
        seed: int; chunk_rows: rows per Parquet row group / .npy shard;
        verbose: 0 or 1 (a progress bar).

    Returns:
        dict: rows, columns {name: dtype and width}, path, format.
    """
    import keras

    from kvae import anomaly
    from kvae.data import DataError

    out = Path(out)
    fmt = "parquet" if out.suffix == ".parquet" else "npy"
    if out.exists():
        raise DataError(f"--out {out} exists; choose a new path (nothing was written).")
    if not out.parent.is_dir():
        raise DataError(f"--out {out}: the folder {out.parent} does not exist.")
    scorers = [anomaly.get(s) if isinstance(s, str) else s for s in scores]
    for s in scorers:
        if s.needs_reference:
            raise DataError(f"The {s.name} score needs a reference fit; `score` takes scores that do not "
                            f"(e.g. {', '.join(n for n in ('elbo', 'nll', 'complexity'))}).")
    if model.conditional and labels is None:
        raise DataError("This model is conditional: the data must have labels.")
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def encode(xb, lb):
        return tf.cast(model.posterior.mode_stddev(model.encode_params(xb, lb))[0], tf.float32)

    n = len(data)
    bar = keras.utils.Progbar(n, unit_name="example") if verbose else None
    writer = _Writer(fmt)
    with files.atomic_path(out, directory=fmt == "npy") as tmp:
        writer.open(tmp)
        start, pending = 0, []
        for xb, yb in _chunks(data, labels, batch_size, binarize, seed):
            yb = None if yb is None else np.asarray(yb, np.int32)
            lb = yb if model.conditional else None
            row = {"index": np.arange(start, start + len(xb), dtype=np.int64)}
            if yb is not None:
                row["label"] = yb
            row["mean"] = encode(tf.constant(xb), None if lb is None else tf.constant(lb)).numpy()
            for s in scorers:
                row[s.name] = np.asarray(s(model, xb, lb), np.float32)
            pending.append(row)
            start += len(xb)
            if sum(len(r["index"]) for r in pending) >= chunk_rows:
                writer.write(pending)
                pending = []
            if bar:
                bar.add(len(xb))
        if pending:
            writer.write(pending)
        info = writer.close(start)
    info.update(path=str(out), format=fmt)
    return info


class _Writer:
    """Appends chunks of rows to a Parquet file or to .npy shards."""

    def __init__(self, fmt):
        self.fmt, self.columns, self.shards, self.parquet = fmt, {}, 0, None

    def open(self, path):
        self.path = Path(path)

    def write(self, rows):
        chunk = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        self.columns = {k: {"dtype": str(v.dtype), "width": int(v.shape[1]) if v.ndim > 1 else 1}
                        for k, v in chunk.items()}
        if self.fmt == "npy":
            for k, v in chunk.items():
                with files.atomic_path(self.path / f"{k}-{self.shards:05d}.npy") as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, v)
        else:
            from kvae.extras import require

            pa = require("pyarrow", "data", "Writing Parquet files")
            pq = require("pyarrow.parquet", "data", "Writing Parquet files")
            table = pa.table({k: (pa.FixedSizeListArray.from_arrays(v.reshape(-1), v.shape[1]) if v.ndim > 1
                                  else v) for k, v in chunk.items()})
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(str(self.path), table.schema)
            self.parquet.write_table(table)
        self.shards += 1

    def close(self, rows):
        info = {"rows": rows, "columns": self.columns, "shards": self.shards}
        if self.parquet is not None:
            self.parquet.close()
        if self.fmt == "npy":
            files.write_json(self.path / "scores.json", info)
        return info


def read(path, columns=None):
    """The rows `score` wrote, as numpy arrays (whole: for files that fit in memory).

    Args:
        path: a `.parquet` file or a folder of `.npy` shards; columns: names or None (all).

    Returns:
        dict {column: array [rows] or [rows, width]}.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        from kvae.extras import require

        table = require("pyarrow.parquet", "data", "Reading Parquet files").read_table(path, columns=columns)
        out = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            width = getattr(col.type, "list_size", None)  # a FixedSizeList column: [rows, width]
            out[name] = np.asarray(col.flatten()).reshape(len(col), width) if width else np.asarray(col)
        return out
    info = json.loads((path / "scores.json").read_text())
    names = columns or list(info["columns"])
    return {k: np.concatenate([np.load(path / f"{k}-{i:05d}.npy") for i in range(info["shards"])])
            for k in names}
