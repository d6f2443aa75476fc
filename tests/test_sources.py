"""Streaming sources (kvae.data.sources, kvae.data.sequential): the same data streamed or in memory
trains the same weights; resume from a streamed source is exact; damaged
files are named before or while they are read."""

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

import kvae.data as kdata
from kvae import cli
from kvae.data import subset as ksubset
from kvae.data import DataError


@pytest.fixture(scope="module")
def pixels():
    """400 digits as uint8 0..255 with labels (what users store in .npy files)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:400] * 16).clip(0, 255).astype(np.uint8), d.target[:400].astype(np.int64)


def _train(dataset, out, *flags, epochs=1):
    return cli.main(["train", "--dataset", str(dataset), "--epochs", str(epochs), "--quiet", "--latent-dim", "2",
                     "--out", str(out), *flags])


def _weights(run, which="last"):
    import keras

    return keras.saving.load_model(Path(run) / f"{which}.keras").get_weights()


def _max_diff(a, b):
    return max(float(np.abs(u - v).max()) for u, v in zip(a, b))


def test_npy_and_stored_npz_read_rows_as_numpy_does(tmp_path, pixels):
    x, y = pixels
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", other=np.zeros(3), x_train=x, y_train=y)
    rows = np.array([399, 0, 17, 17])
    for src in (kdata.open_source(tmp_path / "x.npy"), kdata.open_source(tmp_path / "x.npz")):
        assert (src.n, src.shape, src.dtype) == (400, (8, 8), np.uint8)
        np.testing.assert_array_equal(src.read(rows), x[rows])
    np.testing.assert_array_equal(kdata.open_source(tmp_path / "x.npz").labels, y)


def test_unreadable_layouts_are_refused_with_the_file_named(tmp_path, pixels):
    x, _ = pixels
    np.savez_compressed(tmp_path / "c.npz", x=x)
    with pytest.raises(DataError, match=r"c\.npz \(x\) is compressed .*np\.savez"):
        kdata.open_source(tmp_path / "c.npz")
    np.save(tmp_path / "t.npy", x)
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"t\.npy is truncated: its header promises 400 examples"):
        kdata.open_source(tmp_path / "t.npy")


@pytest.mark.slow
def test_streamed_training_resumed_ends_with_the_in_memory_weights(tmp_path, pixels):
    """The streamed pipeline reads the same rows in the same order and draws
    the same binarisation noise as the in-memory one, so the weights are
    equal bit for bit (not merely close), also across a resume; labels come
    along for --conditional. Then the run scores the file, streamed, to Parquet."""
    from kvae import scoring

    x, y = pixels
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert _train(tmp_path / "d.npz", tmp_path / "mem", "--conditional", epochs=2) == 0
    assert _train(tmp_path / "d.npz", tmp_path / "stream", "--conditional", "--stream", epochs=1) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "stream"), "--epochs", "2", "--quiet"]) == 0
    assert _max_diff(_weights(tmp_path / "mem"), _weights(tmp_path / "stream")) == 0.0
    config = json.loads((tmp_path / "stream" / "config.json").read_text())
    assert "streamed from disk (NpySource)" in config["data"]["notes"]
    out = tmp_path / "scores.parquet"
    assert cli.main(["score", str(tmp_path / "stream"), "--data", str(tmp_path / "d.npz"), "--out", str(out),
                     "--score", "elbo,nll", "--k", "10", "--quiet"]) == 0
    rows = scoring.read(out)
    assert sorted(rows) == ["elbo", "index", "label", "mean", "nll"] and rows["mean"].shape == (400, 2)
    np.testing.assert_array_equal(rows["label"], y)
    assert np.isfinite(rows["nll"]).all() and (rows["elbo"] > 0).all()


def _image_folder(root, x, y):
    from PIL import Image

    for i, (im, label) in enumerate(zip(x, y)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(root / str(label) / f"{i:04d}.png")
    return sorted(root.rglob("*.png"))


def _a_training_file(src):
    """A file of the train split that is not among its first batch (read up front)."""
    train, _, _ = kdata.splits.stream_splits(src.n, src.shape, 0.1, 0)
    return src.files[int(train[300])]


@pytest.mark.parametrize("damage", ["unreadable", "other size"])
def test_a_bad_image_mid_folder_stops_training_naming_the_file(tmp_path, pixels, capsys, damage):
    from PIL import Image

    x, y = pixels
    _image_folder(tmp_path / "images", x, y)
    bad = _a_training_file(kdata.open_source(tmp_path / "images"))
    if damage == "unreadable":
        bad.write_bytes(b"not an image")
    else:
        Image.new("L", (9, 8)).save(bad)
    assert _train(tmp_path / "images", tmp_path / "run", "--stream", "--steps-per-execution", "1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err, err
    assert ("Cannot read the image" in err) if damage == "unreadable" else ("is 9x8 greyscale" in err)
    assert not (tmp_path / "run").exists()  # no epoch finished: nothing left behind


def test_pixels_above_the_sampled_scale_are_named_when_read(tmp_path, pixels, monkeypatch):
    """The scale is decided from the first rows; a later row that breaks it is
    an error naming the file and the example, not silently scaled wrong."""
    monkeypatch.setattr(ksubset, "SAMPLE_ROWS", 50)
    x = (pixels[0] > 100).astype(np.uint8)
    x[200, 3, 3] = 255
    np.save(tmp_path / "b.npy", x)
    src = kdata.open_source(tmp_path / "b.npy")
    subset = kdata.Subset(src, np.arange(400), kdata.scale_of(src)[0], unit="the bernoulli likelihood")
    subset.read(np.arange(200))
    with pytest.raises(DataError, match=r"b\.npy: example 200 has values in \[0, 255\] .*first rows were all 0/1"):
        subset.read(np.arange(190, 210))


def test_prepare_writes_the_streamed_splits_and_a_bounded_seeded_shuffle(tmp_path, pixels):
    import tensorflow as tf

    x, y = pixels
    np.savez(tmp_path / "d.npz", x=x, y=y)
    m = kdata.prepare(tmp_path / "d.npz", tmp_path / "prep", shard_bytes=10_000, verbose=0)
    assert {k: v["examples"] for k, v in m["splits"].items()} == {"train": 324, "validation": 36, "test": 40}
    assert len(m["splits"]["train"]["shards"]) > 2 and m["divisor"] == 255.0
    train_idx = kdata.splits.stream_splits(400, (8, 8), 0.1, 0)[0]
    src = kdata.TFRecordSource(tmp_path / "prep")
    epoch = tf.Variable(0, dtype=tf.int64)

    def one_epoch():
        got = list(src.dataset(seed=3, epoch=epoch, buffer=64).as_numpy_iterator())
        return np.stack([g[0] for g in got]), np.array([g[1] for g in got]), np.array([g[2] for g in got])

    px, labels, pos = one_epoch()
    assert sorted(pos) == list(range(324)) and list(pos) != list(range(324))  # each once, shuffled
    np.testing.assert_array_equal(px, x[train_idx[pos]])  # the record holds the example it claims
    np.testing.assert_array_equal(labels, y[train_idx[pos]])
    np.testing.assert_array_equal(one_epoch()[2], pos)  # a function of (seed, epoch): resume sees it again
    epoch.assign(1)
    assert list(one_epoch()[2]) != list(pos)


def test_prepare_refuses_an_existing_folder_and_leaves_nothing_when_it_fails(tmp_path, pixels, monkeypatch):
    x, _ = pixels
    np.save(tmp_path / "d.npy", x)
    (tmp_path / "taken").mkdir()
    with pytest.raises(DataError, match="taken exists"):
        kdata.prepare(tmp_path / "d.npy", tmp_path / "taken", verbose=0)
    calls = {"n": 0}
    read = kdata.NpySource.read

    def failing(self, idx):  # a fault in the middle of writing the train split
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return read(self, idx)

    monkeypatch.setattr(kdata.NpySource, "read", failing)
    with pytest.raises(OSError):
        kdata.prepare(tmp_path / "d.npy", tmp_path / "prep", shard_bytes=4096, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "taken"]  # no folder, no temporary


def test_a_truncated_shard_is_named_before_training(tmp_path, pixels, capsys):
    x, _ = pixels
    np.save(tmp_path / "d.npy", x)
    assert cli.main(["data", "prepare", str(tmp_path / "d.npy"), "--out", str(tmp_path / "prep"), "--quiet"]) == 0
    shard = tmp_path / "prep" / "train-00000.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-500])
    assert _train(tmp_path / "prep", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("prepare it again.") and f"The shard {shard} has" in err, err
    assert not (tmp_path / "run").exists()


def test_a_damaged_record_mid_shard_stops_training_with_one_line(tmp_path, pixels, capsys):
    x, _ = pixels
    np.save(tmp_path / "d.npy", x)
    kdata.prepare(tmp_path / "d.npy", tmp_path / "prep", verbose=0)
    shard = tmp_path / "prep" / "train-00000.tfrecord"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same length: only the record's checksum can tell
    shard.write_bytes(bytes(raw))
    assert _train(tmp_path / "prep", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TFRecord shard is damaged" in err, err


def test_stream_refuses_static_binarisation_in_one_line(tmp_path, pixels, capsys):
    np.save(tmp_path / "d.npy", pixels[0])
    assert _train(tmp_path / "d.npy", tmp_path / "run", "--binarize", "static") == 2
    assert "--binarize static draws once" in capsys.readouterr().err


def test_npz_member_offsets_survive_other_members(tmp_path, pixels):
    """A stored .npz is a zip: the array's bytes start after its local header,
    whose length varies with the file name and extras."""
    x, _ = pixels
    with zipfile.ZipFile(tmp_path / "m.npz", "w", zipfile.ZIP_STORED) as z:
        z.writestr("a_long_member_name_first.npy", b"x" * 1000)
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array(f, x)
    np.testing.assert_array_equal(kdata.NpySource(tmp_path / "m.npz", member="x").read([5, 6]), x[[5, 6]])


def test_worker_parts_of_every_source_make_the_single_device_batches(tmp_path, pixels):
    """A multi-worker run's pipelines (`shard=(i, 2)`): concatenated, the two
    parts are exactly the batches one device gets (order, labels, dynamic
    binarisation and perturbation noise), for an array, a streamed .npy and a
    prepared TFRecord split; a .npy worker reads only its half of each batch."""
    import tensorflow as tf

    from kvae.data import pipeline

    x, y = pixels
    np.save(tmp_path / "d.npy", x)
    kdata.prepare(tmp_path / "d.npy", tmp_path / "prep", shard_bytes=10_000, verbose=0)
    npy = kdata.Subset(kdata.open_source(tmp_path / "d.npy"), np.arange(400), 255.0, "test")
    reads = []
    real_read = npy.read
    npy.read = lambda idx: (reads.append(len(idx)), real_read(idx))[1]
    epoch = tf.Variable(3, dtype=tf.int64)
    for data, labels in [(x.astype("float32") / 255, y), (npy, y), (kdata.TFRecordSource(tmp_path / "prep"), True)]:
        kw = dict(batch_size=32, seed=7, dynamic_binarize=True, epoch=epoch, perturb=0.2)
        whole = list(pipeline(data, labels, drop_remainder=True, **kw).as_numpy_iterator())
        reads.clear()
        parts = [list(pipeline(data, labels, shard=(i, 2), **kw).as_numpy_iterator()) for i in range(2)]
        assert len(whole) == len(parts[0]) == len(parts[1]) >= 10
        if data is npy:
            assert set(reads) == {16}  # each worker reads only its 16 rows of a batch of 32
        for w, a, b in zip(whole, *parts):
            np.testing.assert_array_equal(w[0], np.concatenate([a[0], b[0]]))
            np.testing.assert_array_equal(w[1], np.concatenate([a[1], b[1]]))
    with pytest.raises(DataError, match="batch size 30 cannot be split into 4 equal parts"):
        pipeline(x.astype("float32"), batch_size=30, shard=(0, 4))


@pytest.fixture(scope="module")
def tfds_prepared(tmp_path_factory, pixels):
    """A small image dataset prepared by TFDS itself (offline: a builder
    defined here), as `tfds build` leaves one on disk."""
    import tensorflow_datasets as tfds

    x, y = pixels

    class TinyDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 340), "test": self._generate_examples(340, 400)}

        def _generate_examples(self, lo, hi):
            for i in range(lo, hi):
                yield i, {"image": x[i, :, :, None], "label": int(y[i])}

    root = tmp_path_factory.mktemp("tfds")
    builder = TinyDigits(data_dir=str(root))
    builder.download_and_prepare()
    return root, Path(builder.data_dir)


def test_prepared_tfds_data_streams_by_name_or_directory(tfds_prepared, pixels, tmp_path):
    """TFDS prepared splits stream (no download, no builder code needed): by
    name under --data-dir or by directory; TFDS's splits (validation: the
    last 10% of train; test: test), an order that is a function of (seed,
    epoch), and `kvae train --stream` trains from it."""
    import tensorflow as tf


    root, directory = tfds_prepared
    x, y = pixels
    assert kdata.find_prepared("tiny_digits", root) == directory
    assert kdata.find_prepared("tiny_digits", tmp_path) is None
    ds = kdata.load_streamed(str(directory), seed=0)
    assert (len(ds.train[0]), len(ds.validation[0]), len(ds.test[0]), ds.num_classes) == (306, 34, 60, 10)
    assert ds.input_shape == (8, 8, 1)
    train, epoch = ds.train[0], tf.Variable(0, dtype=tf.int64)

    def one_epoch():
        got = list(train.dataset(seed=3, epoch=epoch, buffer=64).as_numpy_iterator())
        return np.stack([g[0] for g in got]), np.array([g[1] for g in got]), np.array([g[2] for g in got])

    px, labels, pos = one_epoch()
    assert sorted(pos) == list(range(306)) and list(pos) != list(range(306))
    label_of = {}
    for image, label in zip(x[:340], y[:340]):
        label_of.setdefault(bytes(image), set()).add(int(label))
    assert all(int(lab) in label_of[bytes(p)] for p, lab in zip(px, labels))  # TFDS's train examples, labelled
    np.testing.assert_array_equal(one_epoch()[2], pos)
    epoch.assign(1)
    assert list(one_epoch()[2]) != list(pos)
    # validation holds examples of train that the training split does not
    val = {bytes((v[..., 0] * 255).round().astype(np.uint8)) for v in ds.validation[0]}
    assert not val & {bytes(p) for p in px}

    assert _train("tiny_digits", tmp_path / "run", "--stream", "--data-dir", str(root), epochs=2) == 0
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3
    assert "TFDS" in json.loads((tmp_path / "run" / "config.json").read_text())["data"]["source"]


def test_a_late_out_of_scale_tfds_example_stops_the_run_naming_it(tmp_path, monkeypatch, capsys):
    """0/1 TFDS images with one 0..255 example after the rows that set the
    scale: training stops with one line naming the dataset and the position."""
    import tensorflow_datasets as tfds


    images = (np.random.default_rng(0).uniform(size=(80, 8, 8, 1)) > 0.5).astype(np.uint8)
    images[50] *= 255

    class BinaryDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(8, 8, 1))}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, image in enumerate(images):
                yield i, {"image": image}

    builder = BinaryDigits(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare()
    monkeypatch.setattr(ksubset, "SAMPLE_ROWS", 4)  # the scale is decided from the first 4 rows
    run = tmp_path / "run"
    capsys.readouterr()
    assert _train(builder.data_dir, run, "--batch-size", "8") == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(r"kvae train: error: \S+/binary_digits/1\.0\.0 \(train\[:\d+\]\): integer pixels above 1 "
                        r"where the first rows were all 0/1, in the example at position \d+\.", error), error
    assert not run.exists()  # a new run that failed in its first epoch leaves nothing
