"""kasp.export: filled in by later stages (see README roadmap)."""
