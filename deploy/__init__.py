"""kasp.deploy: filled in by later stages (see README roadmap)."""
