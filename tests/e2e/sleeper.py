"""A recipe that joins the process group, reports its pid, then waits to be stopped."""

import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

dist.init_process_group("gloo")
Path(sys.argv[1], f"worker{dist.get_rank()}.pid").write_text(str(os.getpid()))
time.sleep(600)
