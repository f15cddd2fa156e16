"""Test-only entry point: `spark-jax generate` with the deterministic fake backends.

Run as a script by the kill-and-resume test; the production CLI cannot select these fakes.
FAKE_DELAY_S slows the backends down so that a test can kill the process mid-run.
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from fakes import FakeGenerator, FakeJudge, fake_tool_runner  # noqa: E402

from spark_jax.cli import generate as generate_command  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    generate_command.add_generate_args(parser)
    args = parser.parse_args()
    delay = float(os.environ.get("FAKE_DELAY_S", "0"))
    sys.exit(generate_command.run_generate(
        args,
        judge=FakeJudge(delay_s=delay),
        generator=FakeGenerator(delay_s=delay),
        tool_runner=fake_tool_runner,
    ))
