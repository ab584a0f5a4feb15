"""The user's own DeepSpeed settings (``--ds``, ``deepspeed:``, ``--ds-config``) and accelerate
options (``--accelerate``): merged once into what is rendered, refused where ftlaunch owns the
value (naming the flag), typed as DeepSpeed types them, and judged by the libraries themselves.

The oracles are the libraries' own classes: DeepSpeed's ``DeepSpeedConfig`` and pydantic models,
transformers' ``HfTrainerDeepSpeedConfig``, accelerate's launch parser. Nothing is mocked but the
world size DeepSpeed would ask a process group for (there is none in a test).
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher.backends.base import node_command
from launcher.cli import main
from launcher.cli.flags import spec_from_args
from launcher.cli.launch import launch_parser
from launcher.errors import SpecError
from launcher.machine import libcheck
from launcher.protocol import ENTRY_MODULE
from launcher.render import render_all
from launcher.render.accelerate import OWNED_OPTIONS, render_accelerate
from launcher.render.deepspeed import OWNED, spec_config
from launcher.render.dsschema import TYPES
from launcher.rules.validate import validate
from launcher.spec.decided import Resolved, Resume
from launcher.spec.launchspec import Batch, LaunchSpec, Topology, Zero, from_mapping, to_dict
from launcher.spec.settings import leaf_items_of
from tests.test_cli import heavy_modules_after

RECIPE = "recipe.py"
SAMPLE = {bool: True, int: 4, float: 0.5, str: "cpu"}  # a value of the right type, per kind


def resolved_from(argv: list[str]) -> Resolved:
    """Through the real parser and spec builder, as ``ftlaunch`` does (files are read there)."""
    return validate(spec_from_args(launch_parser().parse_args([*argv, RECIPE]), RECIPE, ()))


def refusal(argv: list[str]) -> str:
    with pytest.raises(SpecError) as err:
        resolved_from(argv)
    return err.value.render()


# ---------------------------------------------------------------- (a) merged and accepted


def test_settings_are_merged_and_accepted_by_deepspeed_and_transformers(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("mine.json").write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "zero_optimization": {"stage": 3, "overlap_comm": True, "reduce_scatter": False},
                "steps_per_print": 7,
                "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto"}},
            }
        )
    )
    Path("job.yaml").write_text(
        "topology: {procs: 2}\nzero: {stage: 3}\nds_config: mine.json\n"
        "deepspeed:\n  zero_optimization:\n    overlap_comm: false\n    sub_group_size: 5e8\n"
        "  wall_clock_breakdown: true\n"
    )
    resolved = resolved_from(
        [
            *("--job", "job.yaml", "--micro-batch", "2", "--grad-accum", "3"),
            *(
                "--ds",
                "wall_clock_breakdown=false",
                "--ds",
                "zero_optimization.stage3_max_live_parameters=2e8",
            ),
        ]
    )
    ds = render_all(resolved).deepspeed
    assert ds is not None
    zero = ds["zero_optimization"]
    assert zero["overlap_comm"] is False  # the YAML over the file
    assert zero["reduce_scatter"] is False and ds["steps_per_print"] == 7  # the file's, kept
    assert zero["sub_group_size"] == 500_000_000 and type(zero["sub_group_size"]) is int
    assert zero["stage3_max_live_parameters"] == 200_000_000
    assert ds["wall_clock_breakdown"] is False  # the flag over the YAML
    assert ds["train_micro_batch_size_per_gpu"] == 2  # the spec's, not the file's "auto"
    assert libcheck.problems(resolved) == []

    from deepspeed.runtime import config as deepspeed_config
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    world = resolved.world_size
    world_args = type("WorldArgs", (TrainingArguments,), {"world_size": property(lambda self: world)})
    args = world_args(output_dir=str(in_tmp / "out"), report_to="none", **render_all(resolved).trainer)
    hf = HfTrainerDeepSpeedConfig(copy.deepcopy(ds))
    hf.trainer_config_process(args)
    hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=64)), 100)
    assert hf.mismatches == []
    monkeypatch.setattr(deepspeed_config.dist, "get_rank", lambda *a, **k: 0)
    monkeypatch.setattr(deepspeed_config.dist, "get_world_size", lambda *a, **k: world)
    accepted = deepspeed_config.DeepSpeedConfig(hf.config)
    assert accepted.train_batch_size == 2 * 3 * world
    assert accepted.zero_config.overlap_comm is False and accepted.wall_clock_breakdown is False
    assert accepted.zero_config.max_live_parameters == 200_000_000


def test_the_spec_records_the_settings_so_a_resume_needs_no_file(in_tmp: Path) -> None:
    Path("mine.json").write_text('{"steps_per_print": 9}')
    resolved = resolved_from(
        [
            *("--procs", "1", "--zero", "2", "--ds-config", "mine.json", "--ds", "wall_clock_breakdown=true"),
            *("--accelerate", "dynamo_backend=no"),
        ]
    )
    Path("mine.json").unlink()
    spec = resolved.spec
    assert from_mapping(json.loads(json.dumps(to_dict(spec))), "spec.json") == spec
    again = Resolved.from_dict(json.loads(json.dumps(resolved.to_dict())), "decided.json")
    assert render_all(again).deepspeed == render_all(resolved).deepspeed
    assert render_all(again).deepspeed["steps_per_print"] == 9  # type: ignore[index]


def test_accelerate_options_reach_the_command_last_one_winning(in_tmp: Path) -> None:
    resolved = resolved_from(
        [
            *("--procs", "1", "--accelerate", "dynamo_backend=inductor", "--accelerate", "dynamo-backend=no"),
            *("--accelerate", "debug"),
        ]
    )
    argv = node_command(resolved, in_tmp, [])
    entry = argv.index(ENTRY_MODULE) - 1
    assert list(argv[entry - 2 : entry]) == ["--dynamo_backend=no", "--debug"]
    assert libcheck.problems(resolved) == []


# ---------------------------------------------------------------- (b) owned keys


@pytest.mark.parametrize("key", sorted(OWNED))
def test_every_owned_key_is_refused_with_its_flag(key: str) -> None:
    value = json.dumps(SAMPLE[TYPES[key]])
    message = refusal(["--gpus", "2", "--zero", "3", "--ds", f"{key}={value}"])
    assert f"ftlaunch sets {key}" in message
    assert OWNED[key].split(" ")[0].replace("{}", "") in message


@pytest.mark.parametrize(
    ("setting", "flag"),
    [
        ('zero_optimization={"stage": 2}', "--zero 2"),  # an object is its leaves
        ("bf16=true", "--precision"),  # a section replaced by a value
        ('zero_optimization.offload_optimizer="cpu"', "--offload-optimizer"),
    ],
)
def test_a_setting_around_an_owned_key_is_refused_too(setting: str, flag: str) -> None:
    assert flag in refusal(["--gpus", "2", "--zero", "3", "--ds", setting])


def test_a_yaml_mapping_is_checked_as_the_flags_are(in_tmp: Path) -> None:
    Path("job.yaml").write_text(
        "zero: {stage: 2}\ndeepspeed:\n  gradient_clipping: 1.0\n  bf16: {enabled: true}\n"
    )
    message = refusal(["--job", "job.yaml", "--gpus", "1"])
    assert "use --max-grad-norm 1.0 instead" in message and "--precision" in message


def test_every_spec_derived_key_is_owned() -> None:
    """Render a grid of specs: a key whose value, or whose presence within one ZeRO stage, changes
    with the spec is decided by the spec and must be in ``OWNED``; every owned key is rendered."""
    values: dict[str, set[str]] = {}
    present: dict[tuple[int, str], int] = {}
    renders: dict[int, int] = {}
    for resolved in grid():
        leaves = dict(leaf_items_of(spec_config(resolved)))
        stage = resolved.spec.zero.stage
        renders[stage] = renders.get(stage, 0) + 1
        for key, value in leaves.items():
            values.setdefault(key, set()).add(json.dumps(value))
            present[stage, key] = present.get((stage, key), 0) + 1
    sometimes = {key for (stage, key), count in present.items() if count != renders[stage]}
    derived = {key for key, seen in values.items() if len(seen) > 1} | sometimes
    assert derived - set(OWNED) == set()
    assert set(OWNED) - set(values) == set(), "an owned key that nothing renders"


def grid() -> list[Resolved]:
    out = []
    zeros = [Zero(stage=s) for s in (1, 2, 3)] + [
        Zero(stage=3, offload_optimizer=o, offload_params=p, nvme_path="/nvme" if "nvme" in (o, p) else None)
        for o, p in itertools.product(("cpu", "nvme"), ("none", "cpu", "nvme"))
    ]
    topologies = [Topology(gpus=2), Topology(procs=2)]
    batches = [Batch(), Batch(micro=2, grad_accum=4)]
    for zero, topology, batch, precision, clip in itertools.product(
        zeros, topologies, batches, (None, "bf16", "fp16", "fp32"), (None, 1.0)
    ):
        spec = LaunchSpec(
            recipe=RECIPE, topology=topology, zero=zero, batch=batch, precision=precision, max_grad_norm=clip
        )
        try:
            resolved = validate(spec)
        except SpecError:
            continue  # not a launch ftlaunch would render (nvme on CPU, fp16 on CPU)
        out += [resolved, Resolved(resolved.spec, resolved.batch, Resume("/ckpt", 5, universal=True))]
    return out


def test_every_accelerate_option_ftlaunch_sets_is_owned(in_tmp: Path) -> None:
    from accelerate.commands.launch import launch_command_parser

    options = {o.lstrip("-") for a in launch_command_parser()._actions for o in a.option_strings}
    resolved = validate(LaunchSpec(recipe=RECIPE, topology=Topology(gpus=2), zero=Zero(stage=3)))
    machine = ["--machine_rank", "0", "--main_process_ip", "h", "--main_process_port", "1"]
    argv = node_command(resolved, in_tmp, machine)
    used = {a.lstrip("-") for a in argv[: argv.index(ENTRY_MODULE)] if a.startswith("--")}
    rendered = {key.split(".")[-1] for key, _ in leaf_items_of(render_accelerate(resolved, "x"))}
    set_by_ftlaunch = (used | rendered) & options - {"main_training_function"}  # the recipe's own choice
    assert set_by_ftlaunch - set(OWNED_OPTIONS) == set()
    assert set(OWNED_OPTIONS) - options == set(), "an owned option accelerate does not have"


def test_owned_accelerate_options_are_refused_with_the_flag() -> None:
    message = refusal(
        ["--gpus", "2", "--accelerate", "num_processes=4", "--accelerate", "mixed-precision=bf16"]
    )
    assert "ftlaunch sets num_processes; use --gpus / --procs and --nodes" in message
    assert "ftlaunch sets mixed_precision; use --precision" in message


# ---------------------------------------------------------------- (c) types


@pytest.mark.parametrize(
    ("setting", "needed"),
    [
        ('zero_optimization.reduce_bucket_size="8"', "an integer here; write it unquoted"),
        ("zero_optimization.overlap_comm=yes", "true or false"),
        ("wall_clock_breakdown=1", "true or false"),
        ("zero_optimization.sub_group_size=1.5", "an integer"),
        (
            "zero_optimization.stage3_max_live_parameters=auto",
            "an integer",
        ),  # transformers fills no auto here
        ("fp16.loss_scale=NaN", "a number"),
        ("communication_data_type=16", "a string"),
    ],
)
def test_a_wrong_type_names_the_key_the_value_and_the_type(setting: str, needed: str) -> None:
    message = refusal(["--gpus", "1", "--zero", "2", "--ds", setting])
    assert f"--ds {setting}" in message and f"DeepSpeed needs {needed}" in message


def test_malformed_settings_and_settings_without_deepspeed_are_refused() -> None:
    assert "expected KEY=VALUE" in refusal(["--gpus", "1", "--zero", "2", "--ds", "overlap_comm"])
    assert "expected KEY=VALUE" in refusal(["--gpus", "1", "--zero", "2", "--ds", "a..b=1"])
    assert "not a section" in refusal(["--gpus", "1", "--zero", "2", "--ds", "wall_clock_breakdown.x=1"])
    assert "apply to DeepSpeed runs only" in refusal(["--gpus", "1", "--ds", "steps_per_print=5"])


def test_the_types_table_agrees_with_deepspeed() -> None:
    """``dsschema.TYPES`` against DeepSpeed's pydantic annotations, or, for keys DeepSpeed reads
    from the raw dict, against the type of its default; every key is one DeepSpeed reads."""
    from deepspeed.runtime import constants
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    models = {
        "zero_optimization": DeepSpeedZeroConfig,
        "bf16": DeepSpeedBF16Config,
        "fp16": DeepSpeedFP16Config,
    }
    untyped: set[str] = set()
    for key, kind in TYPES.items():
        section, *rest = key.split(".")
        if section in models:
            assert annotated_kind(models[section], rest) is kind, key
            continue
        name = key.split(".")[-1]
        named = [
            n for n in dir(constants) if getattr(constants, n) == name and hasattr(constants, f"{n}_DEFAULT")
        ]
        assert named, f"{key}: no DeepSpeed constant with a default names it, so nothing checks its type"
        defaults = [getattr(constants, f"{n}_DEFAULT") for n in named]
        assert all(d is None or type(d) is kind for d in defaults), (key, defaults)
        if None in defaults:
            untyped.add(key)
    assert untyped == set(TYPED_BY_CONSUMER), (
        "a key whose DeepSpeed default is None needs its type checked below"
    )
    read = libcheck.ReadKeys({"train_micro_batch_size_per_gpu": 1})
    DeepSpeedConfig(read)
    assert {key.split(".")[0] for key in TYPES} - read.asked == set()


# Keys whose DeepSpeed default is None, so the default tells nothing: who gives them their type.
TYPED_BY_CONSUMER = {
    "train_batch_size": "transformers (TrainingArguments)",
    "train_micro_batch_size_per_gpu": "transformers (TrainingArguments)",
    "gradient_accumulation_steps": "transformers (TrainingArguments)",
    "communication_data_type": "DeepSpeedConfig",
    "steps_per_print": "DeepSpeed's ThroughputTimer",
}


def test_keys_without_a_deepspeed_default_have_the_type_their_consumer_uses(tmp_path: Path) -> None:
    """The batch keys hold what transformers fills them with from ``TrainingArguments``;
    ``communication_data_type`` is lower-cased by DeepSpeed, which fails on any other JSON kind;
    ``steps_per_print`` is the modulus of DeepSpeed's ``ThroughputTimer``, which a string breaks
    (numbers pass; the table's int is DeepSpeed's documented type)."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.utils.timer import ThroughputTimer
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    batch_keys = [k for k, who in TYPED_BY_CONSUMER.items() if who.startswith("transformers")]
    filled = HfTrainerDeepSpeedConfig(dict.fromkeys(batch_keys, "auto"))
    args = TrainingArguments(
        str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=3, use_cpu=True
    )
    filled.trainer_config_process(args)
    assert {k: type(filled.config[k]) for k in batch_keys} == {k: TYPES[k] for k in batch_keys}

    base = {"train_micro_batch_size_per_gpu": 1}
    assert TYPES["communication_data_type"] is str
    DeepSpeedConfig({**base, "communication_data_type": "fp32"})
    for wrong in (16, 1.5, True):
        with pytest.raises(AttributeError):
            DeepSpeedConfig({**base, "communication_data_type": wrong})

    kind = TYPES["steps_per_print"]
    timer = ThroughputTimer(None, batch_size=1, steps_per_output=kind(SAMPLE[kind]))
    timer.global_step_count = 3
    timer._is_report_boundary()
    with pytest.raises(TypeError):
        ThroughputTimer(None, batch_size=1, steps_per_output="10")._is_report_boundary()


def annotated_kind(model: Any, path: list[str]) -> Any:
    fields = {key: info for name, info in model.model_fields.items() for key in (name, info.alias or name)}
    kind = libcheck.plain_kind(fields[path[0]].annotation)
    return annotated_kind(kind, path[1:]) if len(path) > 1 else kind


# ---------------------------------------------------------------- (d) --ds-config


@pytest.mark.parametrize(
    ("content", "flags", "expected"),
    [
        (
            {"train_micro_batch_size_per_gpu": 4},
            [],
            '"train_micro_batch_size_per_gpu": 4 in mine.json: set it with --micro-batch 4',
        ),
        (
            {"zero_optimization": {"stage": 3}},
            [],
            "conflicts with 2 from the launch; drop it from mine.json, or set it with --zero 3",
        ),
        (
            {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}},
            [],
            "set it with --offload-optimizer cpu",
        ),
        ({"gradient_clipping": 0.5}, ["--max-grad-norm", "1.0"], "conflicts with 1.0 from the launch"),
        ({"bf16": {"enabled": True}}, ["--precision", "fp32"], "set it with --precision"),
        (
            {"gradient_accumulation_steps": "8"},
            [],
            '"8" in mine.json: a string, but DeepSpeed needs an integer here; write it unquoted: 8',
        ),
        ({"checkpoint": {"load_universal": True}}, [], "set it with ftlaunch resume"),
    ],
)
def test_a_ds_config_that_contradicts_the_launch_is_refused(
    in_tmp: Path, content: dict[str, Any], flags: list[str], expected: str
) -> None:
    Path("mine.json").write_text(json.dumps(content))
    assert expected in refusal(["--gpus", "1", "--zero", "2", *flags, "--ds-config", "mine.json"])


def test_a_ds_config_that_agrees_or_says_auto_is_taken(in_tmp: Path) -> None:
    content = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "offload_param": {"device": "none"}, "allgather_bucket_size": 2e8},
        "checkpoint": {"load_universal": False},
    }
    Path("mine.json").write_text(json.dumps(content))
    resolved = resolved_from(["--gpus", "1", "--zero", "2", "--micro-batch", "2", "--ds-config", "mine.json"])
    ds = render_all(resolved).deepspeed
    assert ds is not None and ds["zero_optimization"]["allgather_bucket_size"] == 200_000_000
    assert "offload_param" not in ds["zero_optimization"] and "checkpoint" not in ds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{nope", "not valid JSON"),
        ('{"a": 1, "a": 2}', "'a' appears twice"),
        ("[1, 2]", "a DeepSpeed config is a JSON object"),
        ('{"gradient_clipping": NaN}', "NaN is not a JSON number"),
    ],
)
def test_a_ds_config_that_is_not_a_config_is_refused(in_tmp: Path, text: str, expected: str) -> None:
    Path("mine.json").write_text(text)
    assert expected in refusal(["--gpus", "1", "--zero", "2", "--ds-config", "mine.json"])
    assert "no such file" in refusal(["--gpus", "1", "--zero", "2", "--ds-config", "other.json"])


# ---------------------------------------------------------------- the launch path: the libraries' own checks


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("zero_optimization.overlap_com=false", "did you mean zero_optimization.overlap_comm?"),
        (
            "zero_optimization.offload_param.pin_memry=true",
            "did you mean zero_optimization.offload_param.pin_memory?",
        ),
        ("wall_clock_breakdwn=true", "never reads it); did you mean wall_clock_breakdown?"),
        (
            'zero_optimization.use_multi_rank_bucket_allreduce="x"',
            "is a string, but DeepSpeed needs true or false",
        ),
        ("elasticity.enabled=true", "Elastic training has been removed"),
    ],
)
def test_deepspeed_itself_judges_what_the_table_does_not_know(setting: str, expected: str) -> None:
    resolved = resolved_from(["--procs", "1", "--zero", "3", "--ds", setting])
    found = libcheck.problems(resolved)
    assert len(found) == 1 and expected in found[0]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("dynamo_backnd=no", "not an 'accelerate launch' option; did you mean dynamo_backend?"),
        ("debug=true", "debug is a switch; give it alone: --accelerate debug"),
        ("dynamo_backend", "needs a value"),
        ("dynamo_backend=nope", "invalid choice: 'nope'"),
    ],
)
def test_accelerate_itself_judges_the_options(option: str, expected: str) -> None:
    found = libcheck.problems(resolved_from(["--procs", "1", "--accelerate", option]))
    assert len(found) == 1 and expected in found[0]


# ---------------------------------------------------------------- (e) the CLI end to end


def test_the_dry_run_shows_the_merged_config(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--procs", "2", "--zero", "2", "--ds", "zero_optimization.reduce_bucket_size=5e8"]
    argv += ["--ds", "wall_clock_breakdown=true", "--accelerate", "dynamo_backend=no", "--dry-run", RECIPE]
    assert main(argv) == 0
    out = capsys.readouterr().out
    ds = json.loads("{" + out.split("ds_config.json\n{", 1)[1].split("\n# ---", 1)[0])
    assert ds["zero_optimization"]["reduce_bucket_size"] == 500_000_000 and ds["wall_clock_breakdown"] is True
    assert f"--dynamo_backend=no -m {ENTRY_MODULE}" in out
    assert '"deepspeed": [\n' in out  # recorded in the decided spec


def test_bad_settings_exit_2_with_every_problem(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--procs", "2", "--zero", "2", "--ds", "zero_optimization.overlap_comm=yes"]
    argv += ["--ds", "train_micro_batch_size_per_gpu=4", "--accelerate", "tee=3", "--dry-run", RECIPE]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err and "Traceback" not in err
    assert "overlap_comm=yes: a string, but DeepSpeed needs true or false" in err
    assert "use --micro-batch 4 instead" in err and "ftlaunch sets tee" in err


def test_a_launch_is_refused_by_deepspeed_before_anything_is_written(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(in_tmp / "ops"))
    argv = ["--procs", "1", "--zero", "2", "--ds", "zero_optimization.overlap_com=false", RECIPE]
    assert main(argv) == 2
    assert "did you mean zero_optimization.overlap_comm?" in capsys.readouterr().err
    assert not Path("runs").exists()


def test_the_dry_run_with_settings_imports_nothing_heavy(in_tmp: Path) -> None:
    Path("mine.json").write_text('{"steps_per_print": 3}')
    argv = ["--procs", "2", "--zero", "3", "--ds-config", "mine.json", "--ds", "wall_clock_breakdown=true"]
    dry_run = [*argv, "--accelerate", "dynamo_backend=no", "--dry-run", RECIPE]
    assert heavy_modules_after(dry_run, in_tmp) == (0, [])
