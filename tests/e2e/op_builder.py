"""A recipe that builds a DeepSpeed op on first use (cpu_adam), as a GPU run's optimizer would."""

from deepspeed.ops.op_builder import CPUAdamBuilder

CPUAdamBuilder().load()
print("op built", flush=True)
