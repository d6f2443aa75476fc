"""Offline resolution of every data source, user data, binarisation, pipelines.
Every file here is written by the test; nothing reaches the network."""

import gzip

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from kvae import callbacks, data


def write_idx(folder, n_train=30, n_test=10, value=7, shape=(28, 28)):
    """The four MNIST-format files; every pixel equals `value` (to tell sources apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", n_train), ("test", n_test)]:
        images_name, labels_name = data.readers.IDX_FILES[split]
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, *shape))
        with gzip.open(folder / images_name, "wb") as f:
            f.write(header + bytes([value]) * (n * shape[0] * shape[1]))
        with gzip.open(folder / labels_name, "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n)))
    return folder


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No source available: empty KERAS_HOME, TFDS dir, data dir; no Debian files;
    and any attempt to download fails the test."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv(data.ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(data.named, "DEBIAN_FASHION_MNIST", tmp_path / "no_debian")

    def no_download(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", no_download)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", no_download)
    return tmp_path


def test_data_dir_from_the_environment(offline, monkeypatch):
    write_idx(offline / "mine" / "fashion_mnist", value=255)
    monkeypatch.setenv(data.ENV_DATA_DIR, str(offline / "mine"))
    ds = data.load("fashion_mnist", validation_fraction=0.2)
    assert ds.source.endswith("fashion_mnist")
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert len(ds.train[0]) == 24 and len(ds.validation[0]) == 6 and len(ds.test[0]) == 10
    assert ds.train[0].dtype == np.float32 and ds.train[0].max() == 1.0  # 255 -> 1


def test_data_dir_comes_before_the_keras_cache(offline):
    write_idx(offline / "keras_home" / "datasets" / "fashion-mnist", value=10)
    write_idx(offline / "given" / "fashion_mnist", value=200)
    ds = data.load("fashion_mnist", data_dir=str(offline / "given"))
    np.testing.assert_allclose(ds.train[0].max(), 200 / 255)
    ds = data.load("fashion_mnist")  # without it, the Keras cache
    assert ds.source.startswith("Keras cache")
    np.testing.assert_allclose(ds.train[0].max(), 10 / 255)


def test_keras_cache_mnist_npz(offline):
    cache = offline / "keras_home" / "datasets"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(cache / "mnist.npz", x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.arange(5))
    ds = data.load("mnist")
    assert ds.source.startswith("Keras cache") and len(ds.test[0]) == 5


def test_tfds_prepared_data_via_mock(offline):
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("mnist")
    assert ds.source == "TFDS prepared data"
    assert ds.input_shape == (28, 28, 1) and 0.0 <= ds.train[0].min() and ds.train[0].max() <= 1.0


def test_tfds_binarized_mnist_via_mock(offline):
    with tfds.testing.mock_data(num_examples=8):
        ds = data.load("binarized_mnist")
    assert ds.source == "TFDS prepared data"
    assert len(ds.validation[0]) == 8 and ds.train[1] is None


def test_debian_fashion_mnist_files(offline, monkeypatch):
    monkeypatch.setattr(data.named, "DEBIAN_FASHION_MNIST", write_idx(offline / "debian", value=3))
    ds = data.load("fashion_mnist")
    assert "Debian" in ds.source


def test_nothing_found_says_what_to_install(offline):
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist")
    with pytest.raises(data.DataNotFoundError, match=r"mnist/ \(or pass --data-dir\).*--download"):
        data.load("mnist")
    with pytest.raises(data.DataNotFoundError, match="binarized_mnist_train.amat"):
        data.load("binarized_mnist")


def test_binarized_mnist_not_found_names_the_folder_and_the_missing_file(offline):
    folder = offline / "d" / "binarized_mnist"
    folder.mkdir(parents=True)
    np.savetxt(folder / "binarized_mnist_train.amat", np.zeros((2, 784)), fmt="%d")  # valid split missing
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("binarized_mnist", data_dir=str(offline / "d"))
    message = str(err.value)
    assert f"{folder} lacks binarized_mnist_valid.amat;" in message and "lacks binarized_mnist_train" not in message
    assert f"no TFDS binarized_mnist prepared in {offline / 'd'}" in message and "\n" not in message


def test_binarized_mnist_amat_files(offline):
    folder = offline / "d" / "binarized_mnist"
    folder.mkdir(parents=True)
    for split, n in [("train", 6), ("valid", 3), ("test", 2)]:
        np.savetxt(folder / f"binarized_mnist_{split}.amat", (np.arange(n * 784).reshape(n, 784) % 2), fmt="%d")
    ds = data.load("binarized_mnist", data_dir=str(offline / "d"))
    assert [len(s[0]) for s in (ds.train, ds.validation, ds.test)] == [6, 3, 2]
    assert set(np.unique(ds.train[0])) == {0.0, 1.0} and not ds.test_is_validation
    (folder / "binarized_mnist_test.amat").unlink()  # withheld: valid stands in, and says so
    ds = data.load("binarized_mnist", data_dir=str(offline / "d"))
    assert ds.test_is_validation and len(ds.test[0]) == 3 and "no test split" in ds.summary()


def test_digits_are_bundled():
    ds = data.load("digits")
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert sum(len(s[0]) for s in (ds.train, ds.validation, ds.test)) == 1797


def test_user_npz(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.full((50, 6, 6), 128, np.uint8), y=np.arange(50) % 3)
    ds = data.load(str(path))
    assert ds.input_shape == (6, 6, 1) and ds.num_classes == 3
    assert len(ds.train[0]) + len(ds.validation[0]) + len(ds.test[0]) == 50


def test_corrupt_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(data.DataError, match="Cannot read .*bad.npz as a .npz file"):
        data.load(str(path))


def test_npz_without_known_keys(tmp_path):
    path = tmp_path / "odd.npz"
    np.savez(path, images=np.zeros((3, 4)))
    with pytest.raises(data.DataError, match=r"holds \['images'\].*x_train"):
        data.load(str(path))


def test_image_folder_with_class_subfolders(tmp_path):
    for cls in ["cats", "dogs"]:
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(np.full((5, 7), 25 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = data.load(str(tmp_path))
    assert ds.input_shape == (5, 7, 1) and ds.num_classes == 2


def test_image_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(data.DataError, match="No images"):
        data.load(str(tmp_path))


def test_image_folder_with_different_sizes(tmp_path):
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(data.DataError, match="differ in size: a.png is 5x5 but b.png is 5x6"):
        data.load(str(tmp_path))


def test_unknown_dataset_name():
    with pytest.raises(data.DataError, match="Unknown dataset 'cifar99'"):
        data.load("cifar99")


def test_binarize_modes():
    x = np.random.default_rng(0).uniform(size=(200, 4, 4, 1)).astype("float32")
    np.testing.assert_array_equal(data.binarize(x, "threshold"), (x > 0.5).astype("float32"))
    a, b = data.binarize(x, "static", seed=1), data.binarize(x, "static", seed=1)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0}
    # a Bernoulli(x) draw: its mean tracks x (3200 draws, sd of the mean ~0.009)
    assert abs(a.mean() - x.mean()) < 0.04
    with pytest.raises(data.DataError, match="Unknown binarisation"):
        data.binarize(x, "sometimes")


def test_pipeline_order_and_dynamic_draws_depend_only_on_seed_and_epoch():
    x = np.random.default_rng(0).uniform(size=(37, 3)).astype("float32")
    y = np.arange(37)
    epoch = tf.Variable(0, dtype=tf.int64)
    ds = data.pipeline(x, y, batch_size=8, seed=5, dynamic_binarize=True, epoch=epoch)

    def one_pass():
        batches = list(ds.as_numpy_iterator())
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    xs0, ys0 = one_pass()
    assert sorted(ys0) == list(range(37))  # every example once per epoch
    assert set(np.unique(xs0)) <= {0.0, 1.0}
    xs0_again, ys0_again = one_pass()
    np.testing.assert_array_equal(ys0, ys0_again)
    np.testing.assert_array_equal(xs0, xs0_again)
    callbacks.SetEpoch(epoch).on_epoch_begin(1)
    xs1, ys1 = one_pass()
    assert not np.array_equal(ys0, ys1)


def test_pipeline_without_epoch_reshuffles_each_pass():
    ds = data.pipeline(np.arange(50, dtype="float32")[:, None], batch_size=50, seed=0)
    first, second = (next(iter(ds)).numpy().ravel() for _ in range(2))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_an_unprepared_tfds_folder_is_passed_over_quietly(offline, caplog, capsys):
    """A TFDS version folder without prepared splits (a download that never finished) is not the
    data: the search goes on to the one-line not-found error, with no KeyError traceback and no absl
    "Variant folder ... has no dataset_info.json" line."""
    import logging

    (offline / "tfds" / "fashion_mnist" / "3.0.1").mkdir(parents=True)
    with caplog.at_level(logging.INFO), pytest.raises(data.DataNotFoundError):
        data.load("fashion_mnist", data_dir=str(offline / "tfds"))
    assert "dataset_info.json" not in caplog.text + capsys.readouterr().err
