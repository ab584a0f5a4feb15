"""TODO(layout) launcher.records."""
