"""`kvae train | recipes | evaluate | sample | reconstruct | export | info | parts | data | score`
and the latent tools `interpolate | traverse | latent-map | anomalies | inpaint | denoise`.

Only wiring: arguments in, calls into kvae.runs, kvae.rundir, kvae.latent
and kvae.plots, one-line errors out (exit code 2 for bad input, no traceback).
Modules: `parser` (the flags; no TensorFlow), `commands` (one short function per
command, each a call into the library and a printed table).
"""

import os
import re
import sys

from kvae.cli import commands
from kvae.cli.parser import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, build_parser

__all__ = ["main", "build_parser", "EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED"]


#: TensorFlow's C++ start-up lines: absl prints them before it reads any setting,
#: so TF_CPP_MIN_LOG_LEVEL cannot hide them (e.g. "I0000 00:00:17.. 42 port.cc:153] oneDNN ...")
_CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                      r"[IWE]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|"
                      r"To enable the following instructions: .* rebuild TensorFlow)")


def _quiet_tensorflow():
    """Import TensorFlow with its C++ start-up lines filtered out, and quieten
    the converters' logging. Lines that are not start-up chatter pass through."""
    import logging
    import tempfile
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in ("tensorflow", "absl", "tf2onnx", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up talks too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            if line.strip() and not _CHATTER.match(line):
                print(line, file=sys.stderr)


def _os_error(e):
    what = e.strerror or str(e)
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return f"{what}{where}"


def main(argv=None):
    """The `kvae` command: parse, call the command, one line on error.

    Args:
        argv: list of str or None (sys.argv[1:]).

    Returns:
        int exit code: 0, 2 (bad input), 1 (failed: NaN loss, a failed export check, an OS error), 130 (interrupted).
    """
    args = build_parser().parse_args(argv)
    if args.command != "info" and not (args.verbose or os.environ.get("KVAE_VERBOSE") == "1"):
        _quiet_tensorflow()
    from kvae import config, data, exporters, extras, rundir

    try:
        return commands.COMMANDS[args.command](args)
    except exporters.VerificationError as e:
        print(f"kvae {args.command}: verification failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (config.RunError, data.DataError, data.DataNotFoundError, ValueError, extras.MissingExtraError) as e:
        print(f"kvae {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FloatingPointError as e:
        print(f"kvae {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # a full disk, a read-only or vanished directory: what the system said, and where
        print(f"kvae {args.command}: error: {_os_error(e)}; nothing half-written was left.", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train" and rundir.is_run(args.resume or args.out):
            hint = f" Resume with: kvae train --resume {args.resume or args.out}"
        print(f"\nkvae {args.command}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
