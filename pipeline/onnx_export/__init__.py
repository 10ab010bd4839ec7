"""ONNX export and its parity gate (logits and zeros against the PyTorch model on real dev batches)."""
