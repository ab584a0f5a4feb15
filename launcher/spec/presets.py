"""The presets committed under ``accelerate_configs/`` and ``ds_configs/``.

They leave every trainer-owned number ``"auto"`` so they work for any world size and any recipe;
a per-run rendering carries explicit numbers instead. ``ftlaunch configs --presets --write``
refreshes them and ``tests/test_presets.py`` fails when the committed files differ.
"""

from __future__ import annotations

from launcher.spec.launchspec import LaunchSpec, Topology, Zero

# Written for one 8-GPU node, the layout users copy most; `accelerate launch --num_processes N`
# overrides the process count without touching the DeepSpeed file.
_NODE = Topology(gpus=8)


PRESETS: dict[str, LaunchSpec] = {
    "ddp": LaunchSpec(topology=_NODE, zero=Zero(stage=0)),
    "zero1": LaunchSpec(topology=_NODE, zero=Zero(stage=1)),
    "zero2": LaunchSpec(topology=_NODE, zero=Zero(stage=2)),
    "zero2_offload": LaunchSpec(topology=_NODE, zero=Zero(stage=2, offload_optimizer="cpu")),
    "zero3": LaunchSpec(topology=_NODE, zero=Zero(stage=3)),
    "zero3_offload": LaunchSpec(
        topology=_NODE, zero=Zero(stage=3, offload_optimizer="cpu", offload_params="cpu")
    ),
}


ACCELERATE_DIR = "accelerate_configs"


DEEPSPEED_DIR = "ds_configs"
