"""An SFT script that hard-codes its batch in ``SFTConfig(...)``, as tutorials and many users' scripts
do, and takes nothing from a parser: ``python fixed_batch_sft.py MICRO ACCUM MAX_STEPS``. The three
numbers come from argv only so one file serves both resume tests; to the launcher they are the
recipe's explicit values, exactly like literals. fp32, no dropout, the shipped 64 chats and the
tiny local model, so runs on different world sizes are comparable step by step."""

import sys
from pathlib import Path

JOBS = Path(__file__).resolve().parents[2] / "jobs"
sys.path.insert(0, str(JOBS))

from datasets import load_dataset  # noqa: E402
from make_tiny import build_tiny_model, default_tiny_dir  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

micro, accum, steps = (int(v) for v in sys.argv[1:4])
training_args = SFTConfig(
    per_device_train_batch_size=micro,
    gradient_accumulation_steps=accum,
    max_steps=steps,
    learning_rate=1e-3,
    logging_steps=1,
    report_to="none",
)
model_path = build_tiny_model(default_tiny_dir())
dataset = load_dataset("json", data_files=str(JOBS / "data" / "sft_messages.jsonl"), split="train")
trainer = SFTTrainer(
    model=AutoModelForCausalLM.from_pretrained(model_path),
    args=training_args,
    train_dataset=dataset,
    processing_class=AutoTokenizer.from_pretrained(model_path),
)
trainer.train()
