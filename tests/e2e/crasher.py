"""A recipe whose rank 1 raises while rank 0 waits for it in a collective."""

import os

import torch.distributed as dist


def load_shard(rank: int) -> None:
    if rank == 1:
        raise ValueError(f"shard {rank} is missing (deliberate failure)")


dist.init_process_group("gloo")
load_shard(int(os.environ["RANK"]))
dist.barrier()
dist.destroy_process_group()
