"""Opening a saved model: one `load_model` for a `.keras` file or a run directory.

A run directory (written by `kvae train`, read by `kvae.rundir`) holds its
checkpoints as `best.keras` and `last.keras` beside `config.json`; this module
knows those names, and nothing else about runs, so the tools that read a model
(evaluation, scores, exporters) open it without importing the run layer.

Example:
    >>> load_model("no/such/model.keras")
    Traceback (most recent call last):
    ...
    ValueError: no/such/model.keras is neither a kvae run directory nor a .keras file (it does not exist).
"""

import json
from pathlib import Path

__all__ = ["load_model", "read_summary", "CONFIG_FILE", "SUMMARY_FILE", "CHECKPOINTS"]

#: the file that makes a folder a run directory
CONFIG_FILE = "config.json"
#: the test metrics a run writes when it ends
SUMMARY_FILE = "summary.json"
#: the checkpoints a run directory holds, as `which` names them
CHECKPOINTS = ("best", "last")


def load_model(path, which="best"):
    """A kvae model from a `.keras` file or from a run directory's checkpoint.

    Args:
        path: str or Path, a `.keras` file saved from a kvae model, or a run
            directory (then its `best.keras`, or `last.keras` if there is no best yet).
        which: str, 'best' or 'last': the checkpoint of a run directory.

    Returns:
        kvae.VAE.

    Raises:
        ValueError naming the path: missing, not a run directory, no finished
        epoch yet, unreadable or truncated, whole but not rebuildable, or not a kvae.VAE.
    """
    import keras

    from kvae import optimizers  # noqa: F401 - registers kvae's optimizers with Keras
    from kvae.model import VAE

    if which not in CHECKPOINTS:
        raise ValueError(f"which must be one of {', '.join(CHECKPOINTS)}, got {which!r}.")
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG_FILE).exists():
            raise ValueError(f"{path} is not a kvae run directory (no {CONFIG_FILE}).")
        run_dir, path = path, path / f"{which}.keras"
        if not path.exists():
            path = run_dir / "last.keras"
        if not path.exists():
            raise ValueError(f"{run_dir} has no checkpoint yet (no finished epoch).")
    elif not (path.suffix == ".keras" and path.is_file()):
        raise ValueError(f"{path} is neither a kvae run directory nor a .keras file"
                         + ("." if path.exists() else " (it does not exist)."))
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - Keras raises many types (zipfile, OSError, ValueError) for bad files
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if _is_whole_archive(path):
            raise ValueError(f"{path} is a whole .keras file, but its model could not be rebuilt: {first}") from None
        raise ValueError(f"{path} is unreadable or truncated: {first}") from None
    if not isinstance(model, VAE):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a kvae.VAE.")
    return model


def read_summary(run_dir):
    """A run's summary.json (the test metrics written when training ended).

    Args:
        run_dir: str or Path.

    Returns:
        dict, {} if the run has not ended (or `run_dir` is a `.keras` file).

    Raises:
        ValueError naming the file if it is unreadable.
    """
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable or truncated ({e}); the run's summary cannot be read.") from None


def _is_whole_archive(path):
    """Whether `path` is a zip archive whose every member reads back with its checksum."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False
