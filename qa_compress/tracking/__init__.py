"""Bottom layer: the MLflow store and runs, the shared cache, signal handling, a sweep's results read back."""
