"""Report rendering: the report stage's table, report.md and plots, its "what ships" and "what pruning
bought" sections, and the sweep report."""
