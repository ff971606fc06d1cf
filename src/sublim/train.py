"""The train stage: LoRA-fine-tune the student on one cell's numbers with TRL's SFTTrainer,
writing every epoch's adapter. Trainer checkpoints live outside the rule's declared outputs, so a
killed job resumes from its last finished epoch."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from sublim.chat import student_example
from sublim.jsonl import read_jsonl

log = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def load_student_dataset(path: str | Path) -> Dataset:
    rows = read_jsonl(path, required=("prompt", "completion"))
    if not rows:
        raise ValueError(
            f"{path} has no rows: no teacher completion passed the filter. Look at the filter "
            f"counts beside it (filter.json); raise protocol.generation.n_prompts or min_rows"
        )
    return Dataset.from_list([student_example(row) for row in rows])


def lora_config(lora: dict) -> LoraConfig:
    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM")


def micro_batch(training: dict, sizing: dict) -> tuple[int, int]:
    """(per-device batch, accumulation steps) giving the preset's effective batch exactly."""
    effective = training["effective_batch"]
    micro = min(sizing["train_micro_batch"] or effective, effective)
    if effective % micro:
        raise ValueError(f"train_micro_batch {micro} does not divide effective_batch {effective}")
    return micro, effective // micro


def sft_config(training: dict, sizing: dict, seed: int, checkpoint_dir: Path,
               report_to: str = "none", run_name: str | None = None) -> SFTConfig:
    on_gpu = torch.cuda.is_available()
    micro, accumulation = micro_batch(training, sizing)
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        num_train_epochs=training["epochs"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        learning_rate=training["learning_rate"],
        lr_scheduler_type=training["lr_scheduler"],
        warmup_steps=training["warmup_steps"],
        max_grad_norm=training["max_grad_norm"],
        max_length=training["max_length"],
        optim=training["optimizer"],
        weight_decay=training["weight_decay"],
        completion_only_loss=training["loss"] == "completion_only",
        packing=False,
        bf16=on_gpu,  # TRL defaults to bf16, 25x slower on a CPU
        gradient_checkpointing=sizing["gradient_checkpointing"],
        seed=seed,
        data_seed=seed,
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=1,
        report_to=report_to,
        run_name=run_name,
        # tokens/s for the tracker; off otherwise (it adds a gather per step)
        include_num_input_tokens_seen="no" if report_to == "none" else "non_padding",
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
    )


class StashEpochAdapters(TrainerCallback):
    """Copies each epoch's adapter out of the checkpoint the trainer just saved, into the resume
    folder, so the rotating checkpoint (save_total_limit=1) keeps no more than one epoch's
    optimizer state while every epoch's adapter survives a kill."""

    def __init__(self, stash_dir: Path):
        self.stash_dir = stash_dir

    def on_save(self, args, state, control, **kwargs):
        epoch = round(state.epoch)
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        target = self.stash_dir / f"epoch-{epoch}"
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copy2(checkpoint / name, partial / name)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        log.info("epoch %d adapter saved", epoch)


def train_student(model_dir: str, dataset_path: str, adapter_dirs: list[str], resume_dir: str,
                  training: dict, sizing: dict, seed: int, report_to: str = "none",
                  run_name: str | None = None, callbacks: tuple = ()) -> dict:
    """Train, resuming from `resume_dir` if a checkpoint is there; then write epoch e's adapter
    into adapter_dirs[e-1] and drop the resume state. Returns the trainer's final metrics.
    `report_to`/`run_name`/`callbacks` hook in an experiment tracker (sublim.tracking)."""
    if len(adapter_dirs) != training["epochs"]:
        raise ValueError(f"{len(adapter_dirs)} adapter folders for {training['epochs']} epochs")
    resume_dir = Path(resume_dir)
    checkpoint_dir, stash_dir = resume_dir / "checkpoints", resume_dir / "adapters"
    dataset = load_student_dataset(dataset_path)

    set_seed(seed)  # before the LoRA weights are drawn, so the init follows the run's seed too
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(training, sizing, seed, checkpoint_dir, report_to, run_name),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(training["lora"]),
        callbacks=[StashEpochAdapters(stash_dir), *callbacks],
    )
    last = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.exists() else None
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    export_adapters(stash_dir, adapter_dirs)
    shutil.rmtree(resume_dir)
    return result.metrics


def export_adapters(stash_dir: Path, adapter_dirs: list[str]) -> None:
    for epoch, out_dir in enumerate(adapter_dirs, start=1):
        source = stash_dir / f"epoch-{epoch}"
        if not all((source / name).exists() for name in ADAPTER_FILES):
            raise FileNotFoundError(f"epoch {epoch}'s adapter is missing from {source}; delete {stash_dir.parent} and rerun to train from scratch")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copy2(source / name, Path(out_dir) / name)
