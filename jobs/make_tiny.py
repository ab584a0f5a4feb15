"""Build a tiny Qwen2 causal LM and its tokenizer locally, so recipes, demos and tests need no hub.

The model (~100k parameters, hidden 64, 2 layers) trains in seconds on a CPU; its byte-level BPE
tokenizer is trained on the shipped ``jobs/data`` text. The ChatML chat template wraps each
assistant turn, end-of-turn token included, in ``{% generation %}...{% endgeneration %}``: TRL's
``assistant_only_loss=True`` needs those markers (Qwen's own template lacks them) and warns unless
``<|im_end|>`` is inside them (otherwise the model never learns to stop).

    python jobs/make_tiny.py OUT_DIR        # prints OUT_DIR; a no-op when it is already built

Every rank of a distributed run may call :func:`build_tiny_model` at once: each builds in its own
temporary folder next to ``OUT_DIR`` and renames it into place, so readers never see a half-written
folder and the losers of the race simply use the winner's copy. The build is seeded, so separate
machines (no shared disk) end up with identical weights and vocabularies.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

DATA_DIR = Path(__file__).resolve().parent / "data"
TINY_ALIASES = (None, "", "tiny")
# Files whose presence means a finished build (the folder only appears by an atomic rename).
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

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


def is_built(out_dir: Path) -> bool:
    return all((out_dir / name).is_file() for name in REQUIRED_FILES)


def build_tiny_model(out_dir: Path) -> Path:
    """Build the tiny model and tokenizer into ``out_dir`` unless already there; return ``out_dir``."""
    out_dir = Path(out_dir).expanduser().resolve()
    if is_built(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        write_tiny(work)
        publish(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def publish(work: Path, out_dir: Path) -> None:
    """Rename ``work`` to ``out_dir``; if another process got there first, keep its complete copy."""
    try:
        os.rename(work, out_dir)  # atomic; replaces only an empty folder
    except OSError:
        if not is_built(out_dir):
            raise


def write_tiny(folder: Path) -> None:
    tokenizer = train_tokenizer()
    tokenizer.save_pretrained(folder)
    save_model(make_model(tokenizer), folder)
    check_reload(folder, tokenizer)
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
    # Drops the tied lm_head copy of the embeddings; transformers re-ties it on load.
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
    print(build_tiny_model(target))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
