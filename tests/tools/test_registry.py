import subprocess
import sys

import pytest

import spark_jax.tools as tools
from spark_jax.tools import TOOL_NAMES, TOOLS, ToolResult, ToolsConfig, run_tool
from spark_jax.tools.base import truncate


def test_names_and_order():
    assert TOOL_NAMES == (
        "calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot",
    )
    assert tuple(TOOLS) == TOOL_NAMES


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_each_tool_describes_itself(name):
    tool = TOOLS[name]
    assert tool.name == name
    assert tool.description and "\n" not in tool.description
    assert tool.argument_format and "\n" not in tool.argument_format


def test_unknown_tool_lists_valid_names():
    r = run_tool("browser", "x")
    assert isinstance(r, ToolResult) and not r.ok
    assert all(n in r.error for n in TOOL_NAMES)
    assert not run_tool(None, "x").ok  # type: ignore[arg-type]


def test_cot_runs_nothing_and_returns_the_thought():
    r = run_tool("cot", "First, 17 * 23 = 391.")
    assert r.ok and r.output == "First, 17 * 23 = 391." and r.error is None


@pytest.mark.parametrize("name", [n for n in TOOL_NAMES if n != "cot"])
@pytest.mark.parametrize("bad", ["", "   ", None, 12, "x" * 30000])
def test_bad_arguments_never_raise(name, bad):
    r = run_tool(name, bad)  # type: ignore[arg-type]
    assert isinstance(r, ToolResult) and not r.ok and r.error


def test_bad_timeout_is_an_error_not_an_exception():
    r = run_tool("calculator", "1+1", timeout_s=-1)
    assert not r.ok and "timeout_s" in r.error


def test_output_is_truncated_with_a_marker():
    tools.configure(ToolsConfig(max_output_chars=100))
    r = run_tool("cot", "y" * 500)
    assert r.ok and r.output.startswith("y" * 100) and "truncated: 400 more characters" in r.output
    assert truncate("abc", 5) == "abc"


def test_config_validation():
    with pytest.raises(ValueError, match="python_timeout_s"):
        ToolsConfig(python_timeout_s=0)
    with pytest.raises(ValueError, match="max_output_chars"):
        ToolsConfig(max_output_chars=5)
    with pytest.raises(ValueError, match="sandbox_uid_range"):
        ToolsConfig(sandbox_uid_range=(10, 5))
    with pytest.raises(ValueError, match="not a module name"):
        ToolsConfig(python_preload=("os; rm",))
    with pytest.raises(ValueError, match="sandbox_mode"):
        ToolsConfig(sandbox_mode="off")
    with pytest.raises(ValueError, match="host_tool_workers"):
        ToolsConfig(host_tool_workers=0)


def test_config_loads_from_yaml(tmp_path):
    from spark_jax.core.config_io import load_config

    p = tmp_path / "tools.yaml"
    p.write_text("python_timeout_s: 3\nsearch_corpus: demo\npython_preload: [numpy]\n")
    cfg = load_config(ToolsConfig, p)
    assert cfg.python_timeout_s == 3.0 and cfg.search_corpus == "demo"
    assert cfg.python_preload == ("numpy",)


def test_import_stays_light():
    code = (
        "import sys, spark_jax.tools; "
        "print(sorted(m for m in ('jax', 'torch', 'transformers', 'sympy', 'scipy', 'pint') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
