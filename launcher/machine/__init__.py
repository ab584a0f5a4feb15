"""TODO(layout) launcher.machine."""
