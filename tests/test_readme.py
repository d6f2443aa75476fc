"""The README's quickstart runs as written."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).parents[1] / "README.md"


def _section_blocks(title):
    text = README.read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_quickstart_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _section_blocks("Quickstart")
    assert len(blocks) == 2
    scope = {}
    exec(blocks[0], scope)
    assert len(blocks[0].strip().splitlines()) == 5  # the five-line quickstart
    history = scope["history"].history
    assert history["val_loss"][-1] < history["val_loss"][0]
    exec(blocks[1], scope)
    assert scope["images"].shape == (16, 8, 8, 1)
    np.testing.assert_array_equal(scope["again"].reconstruct(scope["x"][:4]).numpy(), scope["x_hat"].numpy())
    assert (tmp_path / "vae.keras").exists()
