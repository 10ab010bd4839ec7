"""Runtimes and what ships: OpenVINO IR compile and INT8, onnxruntime sessions and provider policy, the
backend registry that eval and bench share, edge bundles and their torch-free runner."""
