"""A recipe that records the arguments it received (to a file outside the run folder)."""

import json
import os
import sys

import torch.distributed as dist

dist.init_process_group("gloo")
with open(f"{os.environ['ARGV_OUT']}.{dist.get_rank()}", "w") as f:
    json.dump(sys.argv[1:], f)
print("recipe ran", flush=True)
dist.destroy_process_group()
