"""Diagnostics and one-off measurements that no stage imports, each `python -m tools.diagnostics.<name>`:
compare (runs side by side), ddp_throughput, loadtest (a bundle behind the v2 server), startup, threshold."""
