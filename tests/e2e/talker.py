"""A recipe that joins the process group and prints numbered lines for a few seconds."""

import sys
import time

import torch.distributed as dist

dist.init_process_group("gloo")
for i in range(int(sys.argv[1])):
    print(f"line {i} of rank {dist.get_rank()}", flush=True)
    time.sleep(0.1)
dist.destroy_process_group()
