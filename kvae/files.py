"""Files that are whole or absent, and one writer per run directory.

Every file kvae writes goes through `atomic_path` (or its helpers
`write_text` / `write_json`): the content is written under a temporary name
beside the target and renamed over it only when complete, so a reader (or a
process restarted after `kill -9`) sees the old file or the new one, never
half of one. The temporary name is hidden and carries the writer's pid,

    .last.tmp-4242-9f3a1c.keras

so `sweep` can remove what a killed process left, and only that. On any
failure in the writer (an exception, Ctrl-C, a full disk) the temporary file is
removed before the error propagates. Files are created with the user's umask
(no `mkstemp`, which forces mode 0600).

`RunLock` is an exclusive `flock` on a directory: a second process that wants
the same run directory gets `LockedError` at once instead of mixing its files
with the first one's. The kernel drops the lock when its holder dies, so a
killed run never leaves a stale lock behind.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_json(d / "state.json", {"epochs_done": 3})
    >>> sorted(p.name for p in d.iterdir())
    ['state.json']
"""

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from pathlib import Path

__all__ = ["LockedError", "DestinationError", "RunLock", "atomic_path", "check_destination", "is_temp", "sweep",
           "temp_path", "write_json", "write_text"]

_TEMP = re.compile(r"^\..+\.(?:tmp|partial)-(\d+)-[0-9a-f]+")
#: what the temporary name adds to a name (".", ".partial-PID-RANDOM"): a destination must leave room for it
_TEMP_EXTRA = len(".") + len(".partial-") + 7 + len("-") + 6
#: errors that mean "not here" (the destination the user gave), not a failing system (a full disk: OSError)
_DESTINATION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP,
                       errno.EISDIR}


class DestinationError(ValueError):
    """A destination that cannot be written as asked: read-only, a name too long, a symbolic link loop."""


def _shown(path):
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-20:]} ({len(text)} characters)"


def check_destination(path, flag="--out"):
    """Refuse, before any work, a destination that can never be written.

    Args:
        path: str or Path, a file or folder to create or replace; flag: how to name it.

    Raises:
        DestinationError naming the flag and the path: a name longer than the file system
        takes (with room for kvae's temporary name), a symbolic link that leads nowhere (a
        loop or a missing target), or a parent folder that cannot be written.
    """
    path = Path(path)
    limit = os.pathconf(_existing_parent(path), "PC_NAME_MAX") if _existing_parent(path) else 255
    if len(path.name.encode()) + _TEMP_EXTRA > limit:
        raise DestinationError(f"{flag} {_shown(path)}: the name is too long ({len(path.name.encode())} bytes; at "
                               f"most {limit - _TEMP_EXTRA} here).")
    if path.is_symlink() and not path.exists():
        raise DestinationError(f"{flag} {_shown(path)} is a symbolic link that leads nowhere (a loop or a missing "
                               "target).")
    parent = _existing_parent(path)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise DestinationError(f"{flag} {_shown(path)}: {parent} cannot be written (read-only or no permission).")


def _existing_parent(path):
    for p in Path(path).absolute().parents:
        try:
            if p.is_dir():
                return p
        except OSError:
            return None
    return None


def temp_path(path, kind="tmp"):
    """A hidden sibling of `path` naming this process: `.STEM.KIND-PID-RANDOM.SUFFIX`
    (the suffix is kept, since Keras and matplotlib choose the format by it).

    Args:
        path: str or Path; kind: 'tmp' (files) or 'partial' (directories).

    Returns:
        Path.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.{kind}-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")


def _remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path, directory=False):
    """Yield a temporary path beside `path`; when the block ends normally it is
    renamed onto `path` (replacing it), on any error or interrupt it is removed.

    Args:
        path: str or Path, the file (or, with `directory=True`, the directory)
            to create or replace.
        directory: the temporary path is a new, empty directory (created with
            the user's umask) and replaces `path` whole.
    """
    path = Path(path)
    check_destination(path, "cannot write")
    tmp = temp_path(path, "partial" if directory else "tmp")
    try:
        if directory:
            tmp.mkdir()
    except OSError as e:
        raise _named(e, tmp, path) from None
    try:
        yield tmp
        if directory:
            if path.exists():  # rename the old one aside first: never a moment with neither
                old = temp_path(path, "partial")
                os.replace(path, old)
                os.replace(tmp, path)
                _remove(old)
            else:
                os.replace(tmp, path)
        else:
            with open(tmp, "rb+") as f:  # on disk before the rename makes it visible
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise _named(e, tmp, path) from None
    except BaseException:
        _remove(tmp)
        raise


def _named(error, tmp, path):
    """An OSError about kvae's temporary name, told about the path the user gave instead."""
    if error.filename not in (str(tmp), tmp, str(path)) and error.filename2 not in (str(tmp), str(path)):
        return error
    if error.errno in _DESTINATION_ERRNOS:
        return DestinationError(f"cannot write {_shown(path)}: {error.strerror}.")
    return OSError(error.errno, error.strerror, str(path))


def write_text(path, text):
    """Write `text` to `path` atomically (whole or not at all).

    Args:
        path: str or Path; text: str.
    """
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path, data):
    """Write `data` as indented JSON to `path` atomically.

    Args:
        path: str or Path; data: anything `json.dumps` takes.
    """
    write_text(path, json.dumps(data, indent=2))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_temp(name):
    """Whether `name` is one of kvae's hidden temporary names (`.NAME.tmp-PID-*`, `.NAME.partial-PID-*`).

    Args:
        name: str, a file or folder name.

    Returns:
        bool.
    """
    return bool(_TEMP.match(name))


def sweep(directory, recursive=False):
    """Remove the temporary files and directories (`.NAME.tmp-PID-*`,
    `.NAME.partial-PID-*`) left in `directory` by processes that no longer run.

    Args:
        directory: str or Path; recursive: bool, also below it.

    Returns:
        list of the Paths removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    candidates = directory.rglob(".*") if recursive else directory.glob(".*")
    for p in list(candidates):
        m = _TEMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _remove(p)
            removed.append(p)
    return removed


class LockedError(RuntimeError):
    """Another process holds the lock."""


class RunLock:
    """An exclusive, non-blocking `flock` on a directory, held until `release`
    (or the process ends).

    Args:
        directory: an existing directory.
        what: how to name the holder in the error, e.g. "a kvae train".
    """

    def __init__(self, directory, what="another kvae process"):
        self.directory = Path(directory)
        self._fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self._fd)
            self._fd = None
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(f"{self.directory} is in use by {what} (it holds the directory's lock); "
                                  "wait for it to finish, or use another directory.") from None
            raise

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
