"""The `kvae` console script. Started this way, `import kvae` stays lazy, so
`kvae --help` and `kvae --version` answer without importing TensorFlow; in
Python, `import kvae` registers kvae's classes with Keras at once, so
`keras.saving.load_model` reads a kvae `.keras` file."""

import sys


def main(argv=None):
    """Run the `kvae` command (`kvae.cli.main`).

    Args:
        argv: list of str or None (sys.argv[1:]).

    Returns:
        int, the exit code.
    """
    from kvae.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
