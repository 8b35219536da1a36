"""The model to compress: loading and checking checkpoints, model families, fine-tuning, distillation."""
