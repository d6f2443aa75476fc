"""Shared by the benchmark scripts (run as `python bench/NAME.py`, so this
folder is on sys.path): print a results section, and append it to a markdown
file such as bench/RESULTS.md when one is given."""


def emit(text, out=None):
    print("\n" + text)
    if out:
        with open(out, "a") as f:
            f.write("\n" + text + "\n")
