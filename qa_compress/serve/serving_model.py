"""The served model, logged from code (MLflow's models from code, so nothing is pickled): `export.QAModel`."""

import mlflow

from qa_compress.serve.export import QAModel

mlflow.models.set_model(QAModel())
