"""An SFT script as 2024 tutorials wrote it (transformers 4.4x, TRL 0.x): every keyword marked
OUTDATED crashes on current releases. The pre-flight check must name each one before a launch."""

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
from trl import SFTTrainer

model_id = "Qwen/Qwen2.5-0.5B-Instruct"
tokenizer = AutoTokenizer.from_pretrained(model_id)
model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=torch.bfloat16)
dataset = load_dataset("json", data_files="alpaca_data.json", split="train")

args = TrainingArguments(
    output_dir="out/tutorial-2024",
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
    learning_rate=2e-4,
    warmup_ratio=0.03,  # OUTDATED
    evaluation_strategy="steps",  # OUTDATED
    logging_dir="out/logs",  # OUTDATED
    lr_scheduler_type="cosine",
    report_to="none",
)
trainer = SFTTrainer(
    model=model,
    args=args,
    train_dataset=dataset,
    tokenizer=tokenizer,  # OUTDATED
    max_seq_length=512,  # OUTDATED
    packing=True,  # OUTDATED
    peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
)
trainer.train()
