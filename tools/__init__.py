"""Tools run by hand, outside the DVC pipeline: diagnostics/ and gpu/."""
