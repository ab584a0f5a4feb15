"""TODO(layout) launcher.rank."""
