"""``python -m spark_jax`` runs the ``spark-jax`` command line."""

import sys

from spark_jax.cli import main

sys.exit(main())
