"""Backends turn a resolved spec into running processes: ``plan`` is pure, ``run`` does the work."""
