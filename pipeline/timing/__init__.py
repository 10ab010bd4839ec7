"""The benchmark harness: fixed-shape timing loops, percentiles, stability, and OpenVINO's benchmark_app
as a cross-check."""
