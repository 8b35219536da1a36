"""A compressed model as an MLflow model that answers questions over HTTP."""
