"""TODO(layout) launcher.run."""
