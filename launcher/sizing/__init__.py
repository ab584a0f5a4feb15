"""TODO(layout) launcher.sizing."""
