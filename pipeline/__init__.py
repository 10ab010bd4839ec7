"""kasp training half: data -> teacher -> prune (prune at distill)."""
