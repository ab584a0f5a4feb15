"""Every rendering is accepted by the libraries that will read it, and they agree with each other.

For a grid of topologies x ZeRO stages x batch requests x precisions:
- transformers' own ``HfTrainerDeepSpeedConfig`` fills and matches the DeepSpeed JSON against
  TrainingArguments built from the rendered trainer overrides, and reports no mismatch;
- DeepSpeed's own ``DeepSpeedConfig`` accepts the filled JSON and its batch identity holds;
- accelerate's launch parsing accepts the YAML and its DeepSpeed plugin accepts the environment
  the launcher would hand to the workers;
- no setting appears in both the accelerate YAML and the DeepSpeed JSON.

The only thing faked is the world size (this machine cannot start 64 processes): DeepSpeed's and
transformers' calls that ask the process group for it answer the spec's number.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.render import render_all, texts
from launcher.rules.validate import validate
from launcher.spec.decided import Resolved
from launcher.spec.launchspec import Batch, LaunchSpec, Topology, Zero

transformers = pytest.importorskip("transformers")
deepspeed_config = pytest.importorskip("deepspeed.runtime.config")
from accelerate.commands.launch import (  # noqa: E402
    _validate_launch_command,
    launch_command_parser,
    prepare_deepspeed_cmd_env,
    prepare_multi_gpu_env,
)
from accelerate.utils import DeepSpeedPlugin, patch_environment  # noqa: E402
from transformers import TrainingArguments  # noqa: E402
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig  # noqa: E402

ZERO_CHOICES = [
    Zero(stage=0),
    Zero(stage=1),
    Zero(stage=2),
    Zero(stage=2, offload_optimizer="cpu"),
    Zero(stage=3),
    Zero(stage=3, offload_optimizer="cpu", offload_params="cpu"),
    Zero(stage=3, offload_optimizer="nvme", offload_params="nvme", nvme_path="/local_nvme"),
]


@st.composite
def specs(draw: Any) -> Resolved:
    nodes = draw(st.sampled_from([1, 2, 4]))
    per_node = draw(st.sampled_from([1, 2, 4, 8]))
    zero = draw(st.sampled_from(ZERO_CHOICES))
    cpu = zero.offload_optimizer != "nvme" and draw(st.booleans())
    topology = Topology(nodes=nodes, procs=per_node) if cpu else Topology(nodes=nodes, gpus=per_node)
    world = nodes * per_node
    micro, accum = draw(st.integers(1, 8)), draw(st.integers(1, 16))
    form = draw(st.sampled_from(["micro+accum", "global+micro", "global+accum", "all", "none"]))
    glob = micro * accum * world
    batch = {
        "micro+accum": Batch(micro=micro, grad_accum=accum),
        "global+micro": Batch(micro=micro, global_batch=glob),
        "global+accum": Batch(grad_accum=accum, global_batch=glob),
        "all": Batch(micro=micro, grad_accum=accum, global_batch=glob),
        "none": Batch(),
    }[form]
    precision = draw(st.sampled_from([None, "bf16", "fp32"] + ([] if cpu else ["fp16"])))
    clip = draw(st.sampled_from([None, 0.3, 1.0]))
    return validate(
        LaunchSpec(
            recipe="train.py",
            topology=topology,
            batch=batch,
            zero=zero,
            precision=precision,
            max_grad_norm=clip,
        )
    )


def args_for(resolved: Resolved, tmp: Path) -> Any:
    """TrainingArguments built the way the entry builds them: defaults, then the rendered overrides."""
    world = resolved.world_size
    cls = type("WorldArgs", (TrainingArguments,), {"world_size": property(lambda self: world)})
    overrides = dict(render_all(resolved).trainer)
    overrides["use_cpu"] = True  # bf16/fp16 validation would look for a GPU on this machine
    if overrides.get("fp16"):
        overrides.pop("fp16")  # transformers refuses fp16 without a GPU; the JSON side is still checked
        overrides["fp16_full_eval"] = False
    return cls(output_dir=str(tmp), report_to="none", **overrides)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resolved=specs())
def test_deepspeed_json_matches_trainer_args_and_is_accepted(
    resolved: Resolved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render_all(resolved)
    if rendered.deepspeed is None:
        assert resolved.spec.zero.stage == 0
        return
    args = args_for(resolved, tmp_path)
    ds = copy.deepcopy(rendered.deepspeed)
    if resolved.spec.precision == "fp16":
        ds["fp16"]["enabled"] = "auto"  # see args_for: checked below against the trainer override instead
        assert rendered.deepspeed["fp16"]["enabled"] is True and rendered.trainer["fp16"] is True
    hf = HfTrainerDeepSpeedConfig(ds)
    hf.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=64))
    hf.trainer_config_finalize(args, model, num_training_steps=100)  # raises on any mismatch
    assert hf.mismatches == []

    world = resolved.world_size
    monkeypatch.setattr(deepspeed_config.dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(deepspeed_config.dist, "get_world_size", lambda *a, **k: world)
    config = deepspeed_config.DeepSpeedConfig(hf.config)
    assert (
        config.train_batch_size
        == config.train_micro_batch_size_per_gpu * config.gradient_accumulation_steps * world
    )
    if resolved.batch.global_batch is not None:
        assert config.train_batch_size == resolved.batch.global_batch
    assert config.zero_optimization_stage == resolved.spec.zero.stage
    if resolved.spec.zero.stage == 3:
        assert config.zero_config.gather_16bit_weights_on_model_save is True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(resolved=specs(), node=st.integers(0, 3))
def test_accelerate_accepts_the_yaml_and_the_worker_environment(
    resolved: Resolved, node: int, tmp_path: Path
) -> None:
    node = node % resolved.spec.topology.nodes
    rendered = render_all(resolved, deepspeed_path=str(tmp_path / "ds_config.json"))
    for name, text in texts(rendered).items():
        (tmp_path / name).write_text(text)
    argv = [
        "--config_file",
        str(tmp_path / "accelerate.yaml"),
        "--machine_rank",
        str(node),
        "--main_process_ip",
        "10.0.0.1",
        "--main_process_port",
        "29555",
        "train.py",
        "--lr",
        "1",
    ]
    args, defaults, mp_from_config = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert args.num_processes == resolved.world_size
    assert args.num_machines == resolved.spec.topology.nodes
    if rendered.deepspeed is None:
        assert not args.use_deepspeed
        if resolved.world_size > 1:
            prepare_multi_gpu_env(args)
        return
    assert args.use_deepspeed
    fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    accelerate_env = {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}
    assert accelerate_env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(tmp_path / "ds_config.json")
    with patch_environment(**accelerate_env):
        plugin = DeepSpeedPlugin()  # raises if the YAML repeats a setting the JSON owns
    assert plugin.zero_stage == resolved.spec.zero.stage
    assert plugin.zero3_init_flag == (resolved.spec.zero.stage == 3)


@settings(max_examples=40, deadline=None)
@given(resolved=specs())
def test_no_setting_in_two_files(resolved: Resolved) -> None:
    rendered = render_all(resolved)
    yaml_keys = leaf_keys(rendered.accelerate) - {"deepspeed_config_file"}
    json_keys = leaf_keys(rendered.deepspeed or {})
    owned_by_json = {
        "gradient_accumulation_steps",
        "gradient_clipping",
        "zero_stage",
        "mixed_precision",
        "offload_optimizer_device",
        "offload_param_device",
        "zero3_save_16bit_model",
    }
    assert not yaml_keys & (json_keys | owned_by_json)
    assert not yaml_keys & leaf_keys(rendered.trainer)
    assert json.loads(json.dumps(rendered.deepspeed)) == rendered.deepspeed  # plain JSON types only
    assert yaml.safe_load(yaml.safe_dump(rendered.accelerate)) == rendered.accelerate


def test_batch_numbers_are_numbers_not_strings() -> None:
    resolved = validate(
        LaunchSpec(topology=Topology(gpus=8), zero=Zero(stage=2), batch=Batch(micro=2, global_batch=64))
    )
    ds = render_all(resolved).deepspeed
    assert ds is not None
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert type(ds[key]) is int
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (2, 4)


def leaf_keys(data: dict[str, Any]) -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        keys |= leaf_keys(value) if isinstance(value, dict) else {key}
    return keys
