"""What this machine and the installed libraries allow: its GPUs and memory, the recipe's pre-flight
against the installed TRL/transformers, DeepSpeed's and accelerate's own checks of the configs,
the environment report and the op build cache. Edges: these ask the system, never decide a launch."""
