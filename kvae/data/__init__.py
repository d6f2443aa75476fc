"""kvae's data layer: datasets found offline, user files, checks, splits, streaming
sources and the tf.data pipeline. It imports nothing from the model.

    load(name, ...)        the one entry point: a `Dataset` (train / validation / test),
                           in memory or with the train split streamed from disk
    read_inputs(source)    every input of a file or folder, to score or encode
    check, check_shape ... the checks every split and every model input goes through
    binarize, pipeline     binarisation and the tf.data pipeline `fit` reads
    open_source, Subset    sources read by index (.npy, .npz, image folders)
    TFRecordSource, TFDSSource
                           sequential sources (`kvae data prepare`'s folders, prepared TFDS data)
    prepare(name, out)     write a source's splits as TFRecord shards

Modules: `named` (Fashion-MNIST, MNIST, binarised MNIST, digits, found offline),
`readers` (whole files), `checks`, `splits` (the one split draw and the one
(seed, epoch) key), `sources`, `sequential`, `loading`, `pipelines`, `tfrecord` (`prepare`).

Pixels are scaled to [0, 1] by what they are (see `pixel_scale`). Every split
comes as float32 arrays of shape [N, H, W, C] (or [N, D] for vector data), with
int labels or None; a streamed train split is a `Subset` or a `SequentialSource`.
"""

from kvae.data.checks import (check, check_for_model, check_label_range, check_shape, labels_array, pixel_scale,
                              split_validation)
from kvae.data.dataset import Dataset
from kvae.data.errors import DataError, DataNotFoundError, as_data_error
from kvae.data.loading import load, load_arrays, load_streamed, must_stream, read_inputs
from kvae.data.named import ENV_DATA_DIR, NAMES
from kvae.data.pipelines import BINARIZE, binarize, pipeline
from kvae.data.tfrecord import prepare
from kvae.data.readers import IMAGE_SUFFIXES, read_amat, read_image_folder, read_npz
from kvae.data.sequential import MANIFEST, SequentialSource, TFDSSource, TFRecordSource, find_prepared
from kvae.data.sources import ArraySource, ImageFolderSource, NpySource, Source, is_streamable, open_source
from kvae.data.subset import Subset, scale_of

__all__ = ["load", "load_arrays", "load_streamed", "must_stream", "read_inputs", "Dataset", "DataError",
           "DataNotFoundError", "as_data_error", "NAMES", "ENV_DATA_DIR", "BINARIZE", "IMAGE_SUFFIXES", "MANIFEST",
           "check", "check_for_model", "check_label_range", "check_shape", "labels_array", "pixel_scale",
           "split_validation", "binarize", "pipeline", "prepare", "read_amat", "read_image_folder", "read_npz",
           "Source", "ArraySource", "NpySource", "ImageFolderSource", "Subset", "SequentialSource", "TFRecordSource",
           "TFDSSource", "open_source", "is_streamable", "scale_of", "find_prepared"]
