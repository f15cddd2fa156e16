"""``python -m spark_jax`` runs the CLI."""

import sys

from spark_jax.cli import main

sys.exit(main())
