"""Runtimes: OpenVINO IR compile and INT8, onnxruntime sessions and provider policy, and the backend
registry that eval and bench share."""
