"""ftlaunch: launch TRL fine-tuning from one spec that keeps accelerate, DeepSpeed and the trainer agreed."""

from __future__ import annotations

__version__ = "0.1.0"
