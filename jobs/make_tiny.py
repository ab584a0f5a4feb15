"""Build a tiny Qwen2 causal LM and its tokenizer locally, so recipes, demos and tests need no hub.

The model (~100k parameters, hidden 64, 2 layers) trains in seconds on a CPU; its byte-level BPE
tokenizer is trained on the shipped ``jobs/data`` text. The ChatML chat template wraps each
assistant turn, end-of-turn token included, in ``{% generation %}...{% endgeneration %}``: TRL's
``assistant_only_loss=True`` needs those markers (Qwen's own template lacks them) and warns unless
``<|im_end|>`` is inside them (otherwise the model never learns to stop).

    python jobs/make_tiny.py OUT_DIR        # prints OUT_DIR; a no-op when it is already built

Recipes call :func:`build_tiny_model` inside their rank processes, after their trainer config
exists. Under ZeRO-3 that config makes transformers create every model inside
``deepspeed.zero.Init``, which partitions each parameter as it is created: a model built there saves
as empty tensors, and that broken cache failed every later launch (issue 13). So the build always
runs in a separate, fresh interpreter (``python make_tiny.py OUT_DIR``) that has no ZeRO context and
no process group. That process takes a lock file beside ``OUT_DIR`` around check-and-build, so the
ranks of a machine build once; it builds in a temporary folder and renames it into place, so readers
never see a half-written folder. A cached folder is validated (files present, every tensor of the
shape ``config.json`` implies) on each use and rebuilt the same way when broken. The build is
seeded, so separate machines (no shared disk) end up with identical weights and vocabularies.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

DATA_DIR = Path(__file__).resolve().parent / "data"
TINY_ALIASES = (None, "", "tiny")
# Every file a build writes (transformers >= 5 keeps the chat template in its own file). A folder
# holding anything else is not ours, so it is never moved aside or deleted, only refused.
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
# What a rank passes on to its children about the distributed job; the builder process gets none of
# it, so nothing in it can join a process group or see the job's accelerate/DeepSpeed settings.
DISTRIBUTED_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)
DISTRIBUTED_ENV_PREFIXES = ("ACCELERATE_", "TORCHELASTIC_")
EMBEDDINGS, TIED_HEAD = "model.embed_tokens.weight", "lm_head.weight"

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"
VOCAB_SIZE = 500
SEED = 0
ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}

# ChatML. Only the assistant content and its <|im_end|> are inside the generation markers, so the
# assistant mask covers exactly what the model must produce; the template is prefix-preserving
# (earlier turns render the same whatever follows), which TRL also checks.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def default_tiny_dir() -> Path:
    """Where recipes cache the tiny model: ``$FTLAUNCH_TINY_DIR`` or ``~/.cache/ftlaunch/tiny-qwen2``."""
    env = os.environ.get("FTLAUNCH_TINY_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ftlaunch" / "tiny-qwen2"


def resolve_model_name(name: str | None) -> str:
    """A recipe's ``--model_name_or_path``: absent or ``tiny`` means the tiny model, built on demand."""
    if name in TINY_ALIASES:
        return str(build_tiny_model(default_tiny_dir()))
    return str(name)


def build_tiny_model(out_dir: Path) -> Path:
    """Return ``out_dir`` holding a valid tiny model, first building (or rebuilding) it in a separate
    Python process if it is missing or broken.

    A separate process because the caller may be a rank under ZeRO-3, where any model it created
    would be partitioned at creation and saved empty (see the module docstring); checking first
    keeps the usual case, a valid cache, to one read of two small headers."""
    out_dir = Path(out_dir).expanduser().resolve()
    if find_problem(out_dir) is None:
        return out_dir
    env = {key: value for key, value in os.environ.items() if not is_distributed_var(key)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(out_dir)],
        env=env,
        stdout=subprocess.DEVNULL,  # it prints OUT_DIR
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    sys.stderr.write(done.stderr)  # its notes ("rebuilt ... because ...") and errors, in this log
    problem = find_problem(out_dir)
    if done.returncode != 0 or problem is not None:
        said = [line for line in done.stderr.splitlines() if line.strip()]
        why = said[-1].removeprefix("make_tiny: ") if said else problem
        raise RuntimeError(
            f"could not build the tiny model in {out_dir}: {why} (to retry with the whole output: "
            f"{sys.executable} {Path(__file__).resolve()} {out_dir})"
        )
    return out_dir


def is_distributed_var(name: str) -> bool:
    return name in DISTRIBUTED_ENV or name.startswith(DISTRIBUTED_ENV_PREFIXES)


def ensure_built(out_dir: Path) -> Path:
    """Build ``out_dir`` in this process unless it is valid: what ``python make_tiny.py OUT_DIR`` runs.

    The lock makes check-and-build one step for every process on this machine (the ranks' builder
    processes all start at once), so one builds and the others find its result. A broken folder is
    replaced only once its replacement is built and checked: it is moved aside, the new one renamed
    in, the old one deleted. A folder holding files a build does not write is refused instead,
    since ``$FTLAUNCH_TINY_DIR`` may point at something of the user's by mistake."""
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with locked(out_dir.parent / f".{out_dir.name}.lock"):
        problem = find_problem(out_dir)
        if problem is None:
            return out_dir
        broken = out_dir.exists() or out_dir.is_symlink()
        if broken:
            refuse_unless_ours(out_dir, problem)
        work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
        aside = work.with_name(work.name.replace(".tmp-", ".broken-"))
        try:
            write_tiny(work)
            if broken:
                os.rename(out_dir, aside)
            publish(work, out_dir)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)
        if broken:
            print(f"make_tiny: rebuilt {out_dir} because {problem}", file=sys.stderr)
    return out_dir


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed, never deleted: deleting a lock file
    lets two processes lock two different files of the same name)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_unless_ours(out_dir: Path, problem: str) -> None:
    """Raise unless ``out_dir`` is a real folder holding only files a build writes."""
    if out_dir.is_symlink() or not out_dir.is_dir():
        what = "is not a folder"
    else:
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in REQUIRED_FILES)
        if not foreign:
            return
        what = f"holds files a build does not write ({', '.join(foreign)})"
    raise RuntimeError(
        f"the tiny model folder {out_dir} is invalid ({problem}) and {what}, so it is left alone; "
        "move it away, or set FTLAUNCH_TINY_DIR to another folder, and the model is built there"
    )


def is_built(out_dir: Path) -> bool:
    return find_problem(out_dir) is None


def find_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a usable tiny model, or None when it is. Cheap (no torch, no model): the
    files a build writes must be there and non-empty, and ``model.safetensors`` must hold exactly the
    tensors, each of the shape, that ``config.json`` implies, which catches the empty (shape [0])
    tensors a ZeRO-3 partitioned build saves."""
    if not folder.is_dir():
        return "it does not exist" if not folder.exists() else "it is not a folder"
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    empty = [name for name in REQUIRED_FILES if (folder / name).stat().st_size == 0]
    if empty:
        return f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
    try:
        expected = expected_shapes(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        return f"config.json is not a tiny model config ({type(error).__name__}: {error})"
    try:
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="numpy") as weights:
            found = {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as error:  # safetensors raises its own error type for a damaged header
        return f"model.safetensors cannot be read ({error})"
    return shape_problem(expected, found)


def shape_problem(expected: dict[str, list[int]], found: dict[str, list[int]]) -> str | None:
    empty = [name for name, shape in found.items() if 0 in shape]
    if empty:
        return (
            f"model.safetensors holds {len(empty)} empty tensors (e.g. {empty[0]} has shape "
            f"{found[empty[0]]}), as a build under ZeRO-3 partitioned initialisation saves them"
        )
    if TIED_HEAD in found and TIED_HEAD not in expected:
        # Tied embeddings are one tensor with two names: safetensors stores it under the one it
        # picks (or both), and transformers re-ties them on load.
        found = dict(found)
        head = found.pop(TIED_HEAD)
        found.setdefault(EMBEDDINGS, head)
    missing = sorted(expected.keys() - found.keys())
    if missing:
        return f"model.safetensors lacks {len(missing)} tensors (e.g. {missing[0]})"
    extra = sorted(found.keys() - expected.keys())
    if extra:
        return f"model.safetensors holds {len(extra)} tensors config.json does not imply (e.g. {extra[0]})"
    wrong = [name for name in expected if found[name] != expected[name]]
    if wrong:
        return f"{wrong[0]} has shape {found[wrong[0]]}, config.json implies {expected[wrong[0]]}"
    return None


def expected_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """Tensor name -> shape of a Qwen2 causal LM with this config, as :func:`save_model` stores it
    (a tied ``lm_head`` is expected under the embeddings' name). Written out rather than read off a
    model built from the config, so that validating a cache imports neither torch nor transformers."""
    hidden, vocab, inter = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    shapes = {EMBEDDINGS: [vocab, hidden], "model.norm.weight": [hidden]}
    if not config.get("tie_word_embeddings"):
        shapes[TIED_HEAD] = [vocab, hidden]
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        for name, shape in {
            "input_layernorm.weight": [hidden],
            "post_attention_layernorm.weight": [hidden],
            "self_attn.q_proj.weight": [heads * head_dim, hidden],
            "self_attn.q_proj.bias": [heads * head_dim],
            "self_attn.k_proj.weight": [kv_heads * head_dim, hidden],
            "self_attn.k_proj.bias": [kv_heads * head_dim],
            "self_attn.v_proj.weight": [kv_heads * head_dim, hidden],
            "self_attn.v_proj.bias": [kv_heads * head_dim],
            "self_attn.o_proj.weight": [hidden, heads * head_dim],
            "mlp.gate_proj.weight": [inter, hidden],
            "mlp.up_proj.weight": [inter, hidden],
            "mlp.down_proj.weight": [hidden, inter],
        }.items():
            shapes[prefix + name] = shape
    return shapes


def publish(work: Path, out_dir: Path) -> None:
    """Rename ``work`` to ``out_dir``; if another process got there first (another machine on a shared
    disk, outside this machine's lock), keep its copy when it is valid."""
    try:
        os.rename(work, out_dir)  # atomic; replaces only an empty folder
    except OSError:
        if not is_built(out_dir):
            raise


def write_tiny(folder: Path) -> None:
    """Build into ``folder`` in this process and check the result, so a bad build is never published."""
    tokenizer = train_tokenizer()
    tokenizer.save_pretrained(folder)
    save_model(make_model(tokenizer), folder)
    check_reload(folder, tokenizer)
    problem = find_problem(folder)
    if problem is not None:
        raise RuntimeError(f"the tiny model just built in {folder} is invalid: {problem}")
    make_shareable(folder)


def save_model(model: PreTrainedModel, folder: Path) -> None:
    """Write the weights and configs on whichever rank builds. ``model.save_pretrained`` cannot be
    used: once a process group exists (a recipe builds its config, which starts it, before asking
    for the model) transformers writes model files on global rank 0 only and silently nothing
    elsewhere, so another rank would publish a folder holding just the tokenizer."""
    from safetensors.torch import save_model as save_safetensors

    model.config.architectures = [type(model).__name__]  # save_pretrained adds it; TRL reads it
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    # Stores the tied embeddings once (safetensors picks the name); transformers re-ties them on load.
    save_safetensors(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def make_shareable(folder: Path) -> None:
    """``mkdtemp`` creates 0700 folders (and safetensors may write 0600 files); a cache that other
    users or containers read needs the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def corpus() -> Iterator[str]:
    """Every string in the shipped JSONL files, plus ChatML-rendered chats so the role headers and
    the tags the GRPO prompt asks for get merges of their own."""
    for path in sorted(DATA_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield from strings_in(json.loads(line))
    for role in ("system", "user", "assistant"):
        yield f"{IM_START}{role}\nhello{IM_END}\n"
    yield "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>"


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, int | float):
        yield str(value)


def train_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes, no unknown tokens) with the ChatML special tokens.

    ``AutoTokenizer`` loads any ``model_type: qwen2`` folder as ``Qwen2Tokenizer``, which rebuilds
    the tokenizer from the saved vocabulary with Qwen's own pre-tokenizer and, unless told
    ``unk_token=None``, adds an ``<|endoftext|>`` token past the model's vocabulary. So the
    tokenizer is trained with exactly that pipeline and saved with ``unk_token: null``; then
    ``AutoTokenizer`` and ``PreTrainedTokenizerFast`` load the same thing (checked after the build).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[IM_START, IM_END, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=ARCHITECTURE["max_position_embeddings"],
    )


def check_reload(folder: Path, built: PreTrainedTokenizerFast) -> None:
    """Refuse to publish a folder whose ``AutoTokenizer`` view differs from what was trained: a
    token id past the embedding only shows up later as an index error deep inside training."""
    from transformers import AutoTokenizer

    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"tiny model build in {folder} is missing {missing}")
    loaded = AutoTokenizer.from_pretrained(folder)
    probe = f"{IM_START}user\nAda has 12 apples, héllo ✓{IM_END}\n"
    if len(loaded) != len(built) or loaded(probe)["input_ids"] != built(probe)["input_ids"]:
        raise RuntimeError(
            f"AutoTokenizer loads {type(loaded).__name__} with {len(loaded)} tokens from {folder}, "
            f"but the trained tokenizer has {len(built)}; the tiny model would index past its vocabulary"
        )


def make_model(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A randomly initialised (seeded) Qwen2 whose vocabulary and special ids match ``tokenizer``."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise RuntimeError(
            "refusing to build under DeepSpeed ZeRO-3, whose partitioned initialisation would "
            "save empty tensors; call build_tiny_model, which builds in a separate process"
        )
    torch.manual_seed(SEED)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,  # like Qwen's chat models: nothing is prepended
        **ARCHITECTURE,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else default_tiny_dir()
    try:
        print(ensure_built(target))
    except RuntimeError as error:  # a refusal or a failed check: one line, not a traceback
        print(f"make_tiny: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # most likely a folder that is not writable
        print(
            f"make_tiny: cannot build the tiny model in {target}: {error}; "
            "set FTLAUNCH_TINY_DIR to a folder you can write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
