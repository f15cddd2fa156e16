"""Planning runs before renting hardware: per-device memory (``spark-jax plan``) and device facts."""
