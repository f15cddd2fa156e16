"""``python -m spark_jax.cli`` runs the ``spark-jax`` command line."""

import sys

from spark_jax.cli.main import main

sys.exit(main())
