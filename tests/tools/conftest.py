import pytest

import spark_jax.tools as tools
from spark_jax.tools.config import ToolsConfig


@pytest.fixture(autouse=True)
def default_tools_config():
    """Every test starts from (and leaves behind) the default configuration."""
    tools.configure(ToolsConfig())
    yield
    tools.configure(ToolsConfig())
