"""TODO(layout) launcher.rules."""
