"""`kvae data prepare`: a source's splits written as TFRecord shards that
`kvae.data.sequential.TFRecordSource` reads."""

from pathlib import Path

import numpy as np

from kvae.data.errors import DataError
from kvae.data.sequential import MANIFEST, TFRecordSource
from kvae.data.sources import open_source
from kvae.data.splits import stream_splits

__all__ = ["prepare"]


def prepare(name, out, validation_fraction=0.1, seed=0, shard_bytes=64 << 20, verbose=1):
    """Write a source's splits as TFRecord shards that `TFRecordSource` reads
    (`kvae data prepare`): the splits `load` would draw, every example checked
    (numeric, finite, integer pixels in 0..255) on the way. The folder appears
    whole or not at all (written beside `out`, renamed when complete).

    Args:
        name: a `.npy`, `.npz` or image folder; out: the folder to create
        (must not exist); validation_fraction, seed: as in `load`;
        shard_bytes: start a new shard after this many bytes; verbose: 0 or 1 (progress bar).

    Returns:
        dict, the manifest written to `out/kvae-data.json`.
    """
    import keras
    import tensorflow as tf

    from kvae import files

    out = Path(out)
    if out.exists():
        raise DataError(f"--out {out} exists; choose a new folder (nothing was written).")
    src = open_source(name)
    if isinstance(src, TFRecordSource):
        raise DataError(f"{name} is already prepared.")
    splits = dict(zip(("train", "validation", "test"), stream_splits(src.n, src.shape, validation_fraction, seed)))
    integer = np.issubdtype(src.dtype, np.integer) or src.dtype == bool
    lo, hi = np.inf, -np.inf
    manifest = {"format": "kvae-tfrecord-1", "source": src.where, "shape": list(src.shape),
                "dtype": src.dtype.name, "labels": src.labels is not None, "seed": seed,
                "validation_fraction": validation_fraction, "splits": {}}
    bar = keras.utils.Progbar(src.n, unit_name="example") if verbose else None
    with files.atomic_path(out, directory=True) as tmp:
        for split, indices in splits.items():
            shards, writer, written = [], None, 0
            for start in range(0, len(indices), 1024):
                batch = indices[start:start + 1024]
                x = src.read(batch)
                flat = x.reshape(len(x), -1)
                bad = ~np.isfinite(flat).all(axis=1) if not integer else np.zeros(len(x), bool)
                if integer:
                    bad |= (flat.min(axis=1) < 0) | (flat.max(axis=1) > 255)
                if bad.any():
                    j = int(np.argmax(bad))
                    raise DataError(f"{src.name_of(int(batch[j]))}: example {int(batch[j])} "
                                    + ("holds NaN or Inf." if not integer else "has integer pixels outside 0..255."))
                lo, hi = min(lo, float(flat.min())), max(hi, float(flat.max()))
                for j, (row, i) in enumerate(zip(x, batch)):
                    if writer is None or written >= shard_bytes:
                        if writer is not None:
                            writer.close()
                        shards.append({"file": f"{split}-{len(shards):05d}.tfrecord", "examples": 0})
                        writer, written = tf.io.TFRecordWriter(str(tmp / shards[-1]["file"])), 0
                    feature = {"x": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])),
                               "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[start + j]))}
                    if src.labels is not None:
                        feature["y"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(src.labels[i])]))
                    record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
                    writer.write(record)
                    written += len(record)
                    shards[-1]["examples"] += 1
                if bar:
                    bar.add(len(batch))
            if writer is not None:
                writer.close()
            for s in shards:
                s["bytes"] = (tmp / s["file"]).stat().st_size
            manifest["splits"][split] = {"examples": int(len(indices)), "shards": shards}
        if integer and hi > 1:
            divisor, note = 255.0, "integer pixels 0..255: divided by 255"
        else:
            divisor, note = 1.0, ("integer pixels with values 0/1: kept as 0/1 (not divided by 255)"
                                  if integer else None)
        labels = src.labels
        manifest.update(min=lo, max=hi, divisor=divisor, notes=[note] if note else [],
                        binary=bool(hi <= 1 and lo >= 0 and integer),
                        num_classes=int(labels.max()) + 1 if labels is not None else None,
                        classes=src.classes)
        files.write_json(tmp / MANIFEST, manifest)
    return manifest
