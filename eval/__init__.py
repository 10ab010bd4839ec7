"""Measuring and reporting: the benchmark harness, report and sweep rendering, cross-machine compare,
and start-up measurement."""
