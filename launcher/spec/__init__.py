"""TODO(layout) launcher.spec."""
