"""Loss on the answer only, the way TRL 0.x tutorials did it."""

from transformers import AutoTokenizer
from trl import DataCollatorForCompletionOnlyLM, SFTConfig, SFTTrainer

tokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct")
collator = DataCollatorForCompletionOnlyLM("### Answer:", tokenizer=tokenizer)
trainer = SFTTrainer(
    model="Qwen/Qwen2.5-0.5B-Instruct", args=SFTConfig(output_dir="out"), data_collator=collator
)
trainer.train()
