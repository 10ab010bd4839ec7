"""kasp.eval: filled in by later stages (see README roadmap)."""
