"""Example models bundled with edgekit (small, trained, shipped with their weights)."""
