"""PyTorch -> ONNX -> (onnx2tf) -> TFLite, with checks at every hop; TFLite inspection and runtimes."""
