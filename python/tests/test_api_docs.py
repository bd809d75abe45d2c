"""The committed API reference is the one the docstrings give."""

import importlib.util

from conftest import REPO


def test_docs_python_api_md_is_current():
    spec = importlib.util.spec_from_file_location("gen_api", REPO / "python" / "gen_api.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (REPO / "docs" / "PYTHON_API.md").read_text()
    assert committed == gen.render(), "docs/PYTHON_API.md is stale: run `python python/gen_api.py`"


def test_the_module_docstring_example_runs():
    import doctest

    import tokensieve

    result = doctest.testmod(tokensieve)
    assert result.attempted >= 4 and result.failed == 0, result
