"""The runtimes quantization methods compile to: ONNX Runtime and OpenVINO."""
