"""The README's Python examples run as written (the numpy one also runs from the wheel in a clean environment,
`python/check_wheel.sh`)."""

import re
import subprocess
import sys

from conftest import REPO


def block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {name}:start -->\n```python\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert m, f"README.md has no {name} block"
    return m.group(1)


def run_example(name: str) -> str:
    p = subprocess.run([sys.executable, "-c", block(name)], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_numpy_example_prints_what_its_comment_says():
    assert run_example("python-example").split() == "157 (157, 64) (3, 157) 26".split()


def test_the_transformers_example_keeps_a_quarter_and_generates():
    out = run_example("python-hf-example").strip()
    kept, shape = out.split("] ")
    assert len(kept.strip("[").split(",")) == 4
    assert shape == "torch.Size([1, 27])"
