"""The sandbox keeps a Python installation readable when it lives under a covered /tmp."""

from __future__ import annotations

import os

from spark_jax.tools import run_tool
from spark_jax.tools.isolation.sandbox import _python_installation


def test_workers_import_site_packages_wherever_the_venv_lives():
    # CI clones the repository into an arbitrary folder, /tmp included; the worker covers /tmp
    # with a tmpfs and must bind the interpreter's prefixes back (a venv there lost sympy).
    assert os.path.realpath(os.sys.prefix) in _python_installation()
    result = run_tool("python", "import sympy, numpy\nprint(sympy.__name__, numpy.__name__)")
    assert result.ok, result.error
    assert result.output.strip() == "sympy numpy"
