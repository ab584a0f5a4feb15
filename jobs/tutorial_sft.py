"""SFT written the way TRL tutorials write it: no argument parser, every setting hard-coded.

This is the kind of script users bring, kept here so launchers and tests can prove such a script
runs unmodified: ``SFTConfig`` is built first, with micro batch 1 x accumulation 8 and bf16 set
explicitly, then the model is loaded. Only the output folder comes from the command line.

    python jobs/tutorial_sft.py [OUTPUT_DIR]                      # default out/tutorial_sft
    accelerate launch --config_file ddp.yaml jobs/tutorial_sft.py out/tutorial_sft
    ftlaunch --procs 2 --zero 1 jobs/tutorial_sft.py out/tutorial_sft   # global batch 1 x 8 x 2 = 16

Because the batch settings are hard-coded, ``ftlaunch --grad-accum 2`` on this script is refused
(the script sets 8); drop the flag, or remove the setting from the script, to let one side decide.
"""

import sys
from pathlib import Path

from datasets import load_dataset
from make_tiny import build_tiny_model, default_tiny_dir
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

output_dir = sys.argv[1] if len(sys.argv) > 1 else "out/tutorial_sft"

# 1. Training configuration (as in the tutorials: micro batch 1, accumulate 8, bf16).
training_args = SFTConfig(
    output_dir=output_dir,
    per_device_train_batch_size=1,
    gradient_accumulation_steps=8,
    bf16=True,
    learning_rate=2e-4,
    lr_scheduler_type="cosine",
    warmup_steps=1,
    max_steps=4,
    logging_steps=1,
    save_steps=2,
    save_total_limit=2,
    max_length=512,
    assistant_only_loss=True,  # loss on the assistant turns only: needs {% generation %} in the template
    report_to="none",
)

# 2. Model and tokenizer (here the tiny local Qwen2; in a tutorial, a hub id).
model_path = build_tiny_model(default_tiny_dir())
model = AutoModelForCausalLM.from_pretrained(model_path)
tokenizer = AutoTokenizer.from_pretrained(model_path)

# 3. Conversational data: {"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}.
data_file = Path(__file__).resolve().parent / "data" / "sft_messages.jsonl"
dataset = load_dataset("json", data_files=str(data_file), split="train")

# 4. Train and save.
trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)
trainer.train()
trainer.save_model(output_dir)
tokenizer.save_pretrained(output_dir)
