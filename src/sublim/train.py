"""The train stage: LoRA-fine-tune the student on one cell's numbers with TRL's SFTTrainer,
writing every epoch's adapter. Trainer checkpoints live outside the rule's declared outputs, so a
killed job resumes from its last finished epoch."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from contextlib import ExitStack
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from peft.helpers import disable_input_dtype_casting
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, set_seed
from trl import SFTConfig, SFTTrainer

from sublim import attention, fused_lora, shared_prefix
from sublim.atomic import atomic_output
from sublim.chat import student_example
from sublim.config import sizing_defaults
from sublim.gpu_share import train_processes
from sublim.jsonl import read_jsonl, write_json
from sublim.launch import run_processes
from sublim.models import ADAPTER_FILES, held_model

log = logging.getLogger(__name__)


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


# The trainer's performance levers (profiles/*/sizing.yaml, benchmarks/README.md). None of them
# changes the science: effective batch, schedule, loss, data order and LoRA stay the preset's.
TRAINER_LEVERS = ("train_micro_batch", "gradient_checkpointing", "padding_free", "attention", "liger_kernel",
                  "torch_compile", "fused_optimizer", "logging_steps", "lazy_metrics", "lora_autocast_inputs",
                  "shared_prefix", "fused_lora", "train_processes", "async_8bit_optimizer",
                  "flat_8bit_optimizer", "dataloader_workers", "expandable_segments")


def train_sizing(sizing: dict) -> dict:
    """The trainer's levers of a (possibly partial) sizing, the schema's defaults for the rest."""
    defaults = sizing_defaults()
    return {key: sizing.get(key, defaults[key]) for key in TRAINER_LEVERS}


def attention_implementation(sizing: dict) -> str:
    """The transformers attention implementation the student is loaded with."""
    levers = train_sizing(sizing)
    choice = levers["attention"]
    if choice == "auto":
        choice = "varlen" if levers["padding_free"] else "sdpa"
    if choice == "varlen":
        return attention.register()
    if choice in ("sdpa", "eager"):
        return choice
    raise ValueError(f"sizing key 'attention': unknown value {choice!r}; choose auto, varlen, sdpa or eager")


# bitsandbytes' 8-bit AdamW (the seed preset's, config/README.md "Where the presets' trainer settings
# come from") runs on CUDA only.
EIGHT_BIT_OPTIMIZERS = ("adamw_8bit",)


def optimizer_name(training: dict, sizing: dict) -> str:
    """The transformers `optim` the trainer runs: the preset's, fused on a GPU when sizing asks.

    Without CUDA (the demo, the tests) 8-bit AdamW becomes 32-bit AdamW with a warning: the same
    update without the blockwise quantisation of its two moment estimates. The train stage records
    the optimizer it ran in the provenance (metrics.optimizer)."""
    name = training["optimizer"]
    on_gpu = torch.cuda.is_available()
    if name in EIGHT_BIT_OPTIMIZERS:
        if not on_gpu:
            log.warning("protocol.training.optimizer %s needs bitsandbytes on CUDA; this machine has no CUDA "
                        "device, so training runs 32-bit AdamW (adamw_torch) instead", name)
            return "adamw_torch"
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(f"protocol.training.optimizer {name!r} needs bitsandbytes: install the gpu extra "
                             f"(pip install -e '.[gpu]') or set protocol.training.optimizer: adamw_torch")
    fused = train_sizing(sizing)["fused_optimizer"] and on_gpu
    return "adamw_torch_fused" if fused and name == "adamw_torch" else name


def data_seed(training: dict, seed: int) -> int:
    """The seed of the data order: the run's seed, or the preset's fixed value (the seed pipeline
    shuffled every run with 3407; config/README.md, "Where the presets' trainer settings come from")."""
    return seed if training["data_seed"] == "run" else training["data_seed"]


def micro_batch(training: dict, sizing: dict) -> tuple[int, int]:
    """(per-process batch, accumulation steps) giving the preset's effective batch exactly:
    micro-batch x accumulation x training processes."""
    effective, processes = training["effective_batch"], train_processes(train_sizing(sizing))
    micro = min(train_sizing(sizing)["train_micro_batch"] or effective // processes, effective // processes)
    if micro < 1 or effective % (micro * processes):
        times = f" x {processes} training processes" if processes > 1 else ""
        raise ValueError(f"train_micro_batch {micro}{times} does not divide effective_batch {effective}")
    return micro, effective // (micro * processes)


def fsdp_arguments(sizing: dict) -> dict:
    """SFTConfig arguments of a training over several GPUs (`train_processes`): FSDP2 shards the
    frozen weights over the processes (72b: ~73 GB per card instead of 145 GB), each process runs
    its own rows of every batch and gathers each layer's weights just before using it. Rank 0
    alone reads the checkpoint, the others receive their shards; checkpoints hold the full (LoRA)
    state, so the adapter files of every epoch come out as with one process. Activation
    checkpointing, where asked for, is FSDP's own. On CPU (tests) the processes run as plain
    data parallel over gloo: accelerate shards only on accelerators."""
    if train_processes(train_sizing(sizing)) == 1 or not torch.cuda.is_available():
        return {}
    return {"fsdp": True, "fsdp_config": {
        "version": 2,
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "FULL_STATE_DICT",
        "reshard_after_forward": True,
        "activation_checkpointing": train_sizing(sizing)["gradient_checkpointing"],
    }}


def sft_config(training: dict, sizing: dict, seed: int, checkpoint_dir: Path,
               report_to: str = "none", run_name: str | None = None) -> SFTConfig:
    on_gpu = torch.cuda.is_available()
    levers = train_sizing(sizing)
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
        # padding-free TRL does not truncate; check_row_lengths() enforces max_length instead
        max_length=None if levers["padding_free"] else training["max_length"],
        padding_free=levers["padding_free"],
        optim=optimizer_name(training, sizing),
        weight_decay=training["weight_decay"],
        completion_only_loss=training["loss"] == "completion_only",
        packing=False,
        bf16=on_gpu,  # TRL defaults to bf16, 25x slower on a CPU
        gradient_checkpointing=levers["gradient_checkpointing"] and not fsdp_arguments(sizing),
        use_liger_kernel=levers["liger_kernel"] and on_gpu,
        torch_compile=levers["torch_compile"] and on_gpu,
        seed=seed,
        data_seed=data_seed(training, seed),
        save_strategy="epoch",
        save_total_limit=1,
        logging_steps=levers["logging_steps"],
        report_to=report_to,
        run_name=run_name,
        # tokens/s for the tracker; off otherwise (it adds a gather per step)
        include_num_input_tokens_seen="no" if report_to == "none" else "non_padding",
        use_cpu=not on_gpu,
        # collation in worker processes, a batch or two ahead: the host's own time between steps shrinks
        dataloader_num_workers=levers["dataloader_workers"],
        dataloader_persistent_workers=levers["dataloader_workers"] > 0,
        dataloader_prefetch_factor=2 if levers["dataloader_workers"] > 0 else None,
        # pinned batches copied without waiting: a blocking copy waits for the GPU's queue to drain
        dataloader_pin_memory=on_gpu,
        accelerator_config={"non_blocking": on_gpu},
        # its NaN check reads the loss back every micro-step; it only changes what a NaN step logs
        logging_nan_inf_filter=not levers["lazy_metrics"],
        **fsdp_arguments(sizing),
    )


class LazyMetricsSFTTrainer(SFTTrainer):
    """SFTTrainer that reads its per-step metrics back to the host only when it logs.

    TRL 1.16's compute_loss turns entropy, token accuracy and the token count into Python floats
    (`.item()`) on every micro-step: the CPU waits for the forward pass to finish before it may
    queue the backward, so the GPU idles for the launch time of every step. Here the same metrics
    stay GPU tensors until `log`, which averages them as TRL does. The loss is TRL's own `nll`
    branch; any other setup (custom loss, label smoothing, DFT, MoE aux loss, several processes,
    evaluation) takes TRL's code unchanged."""

    def _plain_nll(self) -> bool:
        return (self.compute_loss_func is None and self.label_smoother is None and self.args.loss_type == "nll"
                and not self.aux_loss_enabled and self.accelerator.num_processes == 1)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        shared = {key: inputs.pop(key) for key in shared_prefix.PREFIX_KEYS if key in inputs}
        if return_outputs or not self.model.training or not self._plain_nll():
            if shared:
                raise RuntimeError("a batch with a shared prefix (sizing shared_prefix) reached TRL's own loss, "
                                   "which would count the prefix once; set sizing shared_prefix: false")
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        log_probs, entropy, is_top1 = outputs.log_probs, outputs.entropy.detach(), outputs.is_top1
        valid = outputs.label_mask.sum()
        if shared:  # the prefix's predictions stand for every row's (sublim.shared_prefix)
            prefix, copies = shared["shared_prefix_length"], shared["shared_prefix_copies"]
            weight = shared_prefix.prefix_loss_weight(log_probs.shape, prefix, copies, log_probs.device)
            log_probs, entropy, is_top1 = log_probs * weight, entropy * weight, is_top1 * weight
            valid = valid + shared["shared_prefix_repeated_labels"]
        num_tokens = valid if num_items_in_batch is None else num_items_in_batch
        loss = -log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        # entropy and top-1 hits are zero on ignored positions: a batch with none valid logs 0, as in TRL
        valid = valid.clamp(min=1)
        metrics = self._metrics["train"]
        metrics["entropy"].append(entropy.sum() / valid)
        metrics["mean_token_accuracy"].append(is_top1.sum() / valid)
        if "attention_mask" in inputs:
            self._total_train_tokens += inputs["attention_mask"].sum()
        else:  # padding-free: the rows' length is known on the host
            self._total_train_tokens += shared_prefix.row_tokens(inputs["position_ids"].size(1), shared)
        metrics["num_tokens"] = [self._total_train_tokens]
        return loss

    def _get_num_items_in_batch(self, batch_samples, device):
        """The accumulation window's label count, as if each shared prefix were in every row."""
        count = super()._get_num_items_in_batch(batch_samples, device)
        extra = sum(batch.get("shared_prefix_repeated_labels", 0) for batch in batch_samples)
        return count + extra if count is not None and extra else count

    def _track_num_input_tokens(self, inputs):
        """The tracker's token count: the rows' tokens, a shared prefix once per row."""
        if "shared_prefix_length" not in inputs or self.args.include_num_input_tokens_seen == "no":
            return super()._track_num_input_tokens(inputs)
        self.state.num_input_tokens_seen += shared_prefix.row_tokens(inputs["position_ids"].size(1), inputs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for values in self._metrics["train"].values():
            values[:] = [v.item() if torch.is_tensor(v) else v for v in values]
        super().log(logs, start_time)


def check_row_lengths(trainer: SFTTrainer, max_length: int) -> None:
    """Padding-free training cannot truncate: refuse a row that the padded path would have cut."""
    if not trainer.args.padding_free:
        return
    longest = max(len(ids) for ids in trainer.train_dataset["input_ids"])
    if longest > max_length:
        raise ValueError(
            f"a training row has {longest} tokens, over protocol.training.max_length={max_length}; "
            f"padding-free training does not truncate. Set sizing.<size>.padding_free: false to truncate"
        )


class Async8bitOptimizer(TrainerCallback):
    """bitsandbytes' 8-bit optimizers wait for the GPU (`torch.cuda.synchronize`, through
    `bitsandbytes.utils.sync_gpu`) after every parameter tensor's update, which paged optimizers need.
    A LoRA student has hundreds of such tensors (896 at 32b), so the GPU idles between the updates and
    the next step starts from an empty queue. A non-paged optimizer's updates are kernels on the current
    stream, ordered without the waits: here its steps run without them, with identical values
    (tests/test_async_optimizer.py). Paged optimizers, and other optimizers, are left alone."""

    def __init__(self, module_of_optimizers=None):
        self._find_module = module_of_optimizers or bitsandbytes_optimizer_module
        self._module = None

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        module = self._find_module()
        if module is None or not isinstance(inner, module.Optimizer8bit) or inner.is_paged:
            return
        if not callable(getattr(module, "sync_gpu", None)):
            log.warning("sizing async_8bit_optimizer: this bitsandbytes has no optim.optimizer.sync_gpu; "
                        "its optimizer steps keep their waits")
            return
        self._module, self._sync_gpu = module, module.sync_gpu
        module.sync_gpu = _no_wait

    def on_train_end(self, args, state, control, **kwargs):
        if self._module is not None:
            self._module.sync_gpu = self._sync_gpu
            self._module = None


def _no_wait(tensor) -> None:
    return None


def flat_8bit_adamw(args, model) -> tuple[type, dict]:
    """transformers' class and arguments for optim adamw_8bit, with bitsandbytes' AdamW stepping all
    tensors at once (sublim.flat_optimizer: the same update, one call per buffer)."""
    from sublim.flat_optimizer import FlatAdamW

    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if not issubclass(FlatAdamW, optimizer_class):
        raise RuntimeError(f"optim adamw_8bit built {optimizer_class.__module__}.{optimizer_class.__name__}, not "
                           f"bitsandbytes.optim.AdamW: set sizing flat_8bit_optimizer: false")
    return FlatAdamW, kwargs


def bitsandbytes_optimizer_module():
    """bitsandbytes.optim.optimizer where bitsandbytes is installed, else None."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None
    import bitsandbytes.optim.optimizer

    return bitsandbytes.optim.optimizer


def build_trainer(model, tokenizer, dataset: Dataset, training: dict, sizing: dict, seed: int,
                  checkpoint_dir: Path, callbacks: list | tuple = (), report_to: str = "none",
                  run_name: str | None = None) -> SFTTrainer:
    """The SFTTrainer of the train stage; the benchmarks and the equivalence test build theirs here too."""
    levers = train_sizing(sizing)
    several_processes = train_processes(levers) > 1  # FSDP shards the parameters, frees and refills weights
    trainer_class = LazyMetricsSFTTrainer if levers["lazy_metrics"] else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=sft_config(training, sizing, seed, checkpoint_dir, report_to, run_name),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(training["lora"]),
        callbacks=list(callbacks),
    )
    check_row_lengths(trainer, training["max_length"])
    if levers["flat_8bit_optimizer"] and trainer.args.optim == "adamw_8bit":
        if several_processes:
            log.warning("sizing flat_8bit_optimizer: true does not apply to a training over several processes; "
                        "bitsandbytes steps each tensor")
        else:
            trainer.optimizer_cls_and_kwargs = flat_8bit_adamw(trainer.args, trainer.model)
    if levers["lora_autocast_inputs"] and trainer.args.bf16:
        trainer.add_callback(LoraInputsCastByAutocast())
    if levers["async_8bit_optimizer"]:
        trainer.add_callback(Async8bitOptimizer())
    if levers["fused_lora"]:
        if several_processes:
            log.warning("sizing fused_lora: true does not apply to a training over several processes; "
                        "PEFT's LoRA layers run")
        else:
            trainer.add_callback(fused_lora.FusedLoraLayers())
    if levers["shared_prefix"]:
        why_not = shared_prefix_unsupported(trainer, training, sizing)
        if why_not:
            log.warning("sizing shared_prefix: true does not apply here (%s); every row computes its own prefix",
                        why_not)
        else:
            log.info("sizing shared_prefix: the opening tokens every row of a micro-batch shares are computed once")
            trainer.data_collator = shared_prefix.SharedPrefixCollator(trainer.data_collator)
    return trainer


def shared_prefix_unsupported(trainer: SFTTrainer, training: dict, sizing: dict) -> str | None:
    """Why a training cannot share its rows' common prefix (sublim.shared_prefix), or None."""
    levers = train_sizing(sizing)
    if not (trainer.args.padding_free and attention_implementation(sizing) == attention.VARLEN):
        return "it needs padding_free: true with the varlen attention"
    if not isinstance(trainer, LazyMetricsSFTTrainer) or not trainer._plain_nll():
        return "it needs lazy_metrics: true, one training process and the plain negative log-likelihood"
    if training["lora"]["dropout"]:
        return "LoRA dropout draws a different mask for each copy of the prefix"
    if levers["torch_compile"]:
        return "torch_compile is not measured with it"
    return None


class LoraInputsCastByAutocast(TrainerCallback):
    """Let bf16 autocast alone cast the inputs of the LoRA layers, for the whole training.

    PEFT keeps the adapter weights in float32 and casts each LoRA layer's input to float32 first,
    and autocast then casts it back to bf16 for the matmul: two copies of every activation going
    into 196 LoRA layers (1.5b), and of its gradient, for the same bf16 matmul. Under autocast the
    values are identical either way (tests/test_train_equivalence.py); without autocast the cast is
    needed, so the trainer only adds this callback when it trains in bf16. PEFT's switch,
    `disable_input_dtype_casting`, is a context manager: entered when training begins, left when it
    ends, so the model casts again afterwards."""

    def __init__(self):
        self._casts_off = ExitStack()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._casts_off.enter_context(disable_input_dtype_casting(model))

    def on_train_end(self, args, state, control, **kwargs):
        self._casts_off.close()


def load_student(model_dir: str, sizing: dict):
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    prepare_allocator(sizing)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype,
                                                attn_implementation=attention_implementation(sizing))


def prepare_allocator(sizing: dict) -> None:
    """The sizing's allocator settings, before the student's weights take the GPU's memory."""
    if train_sizing(sizing)["expandable_segments"] and torch.cuda.is_available():
        set_allocator_settings("expandable_segments:True")


def set_allocator_settings(settings: str) -> None:
    """PyTorch's CUDA caching allocator settings (PYTORCH_CUDA_ALLOC_CONF's syntax) for the memory it maps
    from now on. With `expandable_segments:True` it grows its segments in place instead of holding many
    of fixed size: a training near the card's memory (32b: 119 of 141 GB) then no longer runs out of
    cached blocks that fit, frees them all and synchronises the GPU to map anew, a few times a minute
    (benchmarks/README.md, "Twenty-second session")."""
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    (setter or torch.cuda.memory._set_allocator_settings)(settings)


class StashEpochAdapters(TrainerCallback):
    """Copies each epoch's adapter out of the checkpoint the trainer just saved, into the resume
    folder, so the rotating checkpoint (save_total_limit=1) keeps no more than one epoch's
    optimizer state while every epoch's adapter survives a kill."""

    def __init__(self, stash_dir: Path):
        self.stash_dir = stash_dir

    def on_save(self, args, state, control, **kwargs):
        epoch = round(state.epoch)
        stash_adapter(Path(args.output_dir) / f"checkpoint-{state.global_step}", self.stash_dir, epoch)
        log.info("epoch %d adapter saved", epoch)


def stash_adapter(checkpoint: Path, stash_dir: Path, epoch: int) -> None:
    """The checkpoint's adapter into stash_dir/epoch-<epoch>, whole or not at all."""
    with atomic_output(stash_dir / f"epoch-{epoch}") as partial:
        partial.mkdir()
        for name in ADAPTER_FILES:
            shutil.copy2(checkpoint / name, partial / name)


class StashOnMainProcess(StashEpochAdapters):
    """StashEpochAdapters for a training over several processes: the first process wrote the
    checkpoint, and it alone copies the adapter out of it."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            super().on_save(args, state, control, **kwargs)


def resume_fingerprint(model_dir: str, dataset_path: str, training: dict, seed: int) -> dict:
    """What a checkpoint must have been trained on to be resumed: the same model (folder and the
    model it holds), dataset bytes, protocol and seed. Hardware sizing is left out: resuming on
    another GPU is fine."""
    digest = hashlib.sha256(Path(dataset_path).read_bytes()).hexdigest()
    return json.loads(json.dumps({"model_dir": str(model_dir), "model": held_model(model_dir),
                                  "dataset_sha256": digest, "training": training, "seed": seed}, sort_keys=True))


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint the trainer finished writing. trainer_state.json is the last file it
    writes, so a checkpoint without a readable one was cut off by a kill: drop it, take the older."""
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in checkpoint_dir.glob("checkpoint-*")
             if p.name.rsplit("-", 1)[1].isdigit()] if checkpoint_dir.exists() else []
    for _, candidate in sorted(found, reverse=True):
        try:
            json.loads((candidate / "trainer_state.json").read_text())
            return candidate
        except (OSError, ValueError):
            log.warning("dropping %s: a kill cut it off while it was being saved", candidate)
            shutil.rmtree(candidate)
    return None


def resume_checkpoint(resume_dir: Path, fingerprint: dict) -> str | None:
    """The checkpoint to resume from, or None to start fresh. State left by a different dataset,
    seed or protocol (the job reran because one of them changed) is deleted, not resumed. Every
    finished epoch's adapter must be in the stash before training goes on: the last one is copied
    again from the checkpoint when missing, an earlier one missing stops the job here."""
    marker = resume_dir / "fingerprint.json"
    if resume_dir.exists():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != fingerprint:
            if previous is not None or any(resume_dir.rglob("checkpoint-*")):
                log.warning("discarding %s: it was trained on another dataset, seed or protocol", resume_dir)
            shutil.rmtree(resume_dir)
    write_json(marker, fingerprint)
    last = last_complete_checkpoint(resume_dir / "checkpoints")
    if last is None:
        return None
    state = json.loads((last / "trainer_state.json").read_text())
    done = round(state["epoch"])
    stash_dir = resume_dir / "adapters"
    if not stashed(stash_dir, done):
        log.warning("epoch %d's adapter is missing from %s: copying it again from %s", done, stash_dir, last)
        stash_adapter(last, stash_dir, done)
    missing = [epoch for epoch in range(1, done) if not stashed(stash_dir, epoch)]
    if missing:
        raise FileNotFoundError(
            f"epoch {missing[0]}'s adapter is missing from {stash_dir / f'epoch-{missing[0]}'}, and the "
            f"checkpoint holds epoch {done} only; delete {resume_dir} and rerun to train from scratch")
    log.info("resuming from %s: epoch %d of %d done, training continues at epoch %d",
             last, done, state["num_train_epochs"], done + 1)
    return str(last)


def train_student(model_dir: str, dataset_path: str, adapter_dirs: list[str], resume_dir: str,
                  training: dict, sizing: dict, seed: int, report_to: str = "none",
                  run_name: str | None = None, callbacks: tuple = ()) -> dict:
    """Train, resuming from `resume_dir` if a checkpoint is there; then write epoch e's adapter
    into adapter_dirs[e-1] and drop the resume state. Returns the trainer's final metrics and the
    optimizer it ran (`optimizer_name`).
    `report_to`/`run_name`/`callbacks` hook in an experiment tracker (sublim.tracking)."""
    if train_processes(train_sizing(sizing)) > 1:
        return train_student_in_processes(model_dir, dataset_path, adapter_dirs, resume_dir, training, sizing,
                                          seed, report_to)
    if len(adapter_dirs) != training["epochs"]:
        raise ValueError(f"{len(adapter_dirs)} adapter folders for {training['epochs']} epochs")
    resume_dir = Path(resume_dir)
    checkpoint_dir, stash_dir = resume_dir / "checkpoints", resume_dir / "adapters"
    dataset = load_student_dataset(dataset_path)

    # before the trainer, which makes its checkpoint folder
    last = resume_checkpoint(resume_dir, resume_fingerprint(model_dir, dataset_path, training, seed))
    set_seed(seed)  # before the LoRA weights are drawn, so the init follows the run's seed too
    model = load_student(model_dir, sizing)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = build_trainer(model, tokenizer, dataset, training, sizing, seed, checkpoint_dir,
                            [StashEpochAdapters(stash_dir), *callbacks], report_to, run_name)
    result = trainer.train(resume_from_checkpoint=last)
    export_adapters(stash_dir, adapter_dirs)
    shutil.rmtree(resume_dir)
    return {**result.metrics, "optimizer": str(trainer.args.optim.value)}


def stashed(stash_dir: Path, epoch: int) -> bool:
    return all((stash_dir / f"epoch-{epoch}" / name).exists() for name in ADAPTER_FILES)


def export_adapters(stash_dir: Path, adapter_dirs: list[str]) -> None:
    for epoch, out_dir in enumerate(adapter_dirs, start=1):
        source = stash_dir / f"epoch-{epoch}"
        if not stashed(stash_dir, epoch):
            raise FileNotFoundError(f"epoch {epoch}'s adapter is missing from {source}; delete {stash_dir.parent} and rerun to train from scratch")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            # copyfile, not copy2: the file gets the umask's mode (safetensors writes its files 0600)
            shutil.copyfile(source / name, Path(out_dir) / name)


def train_student_in_processes(model_dir: str, dataset_path: str, adapter_dirs: list[str], resume_dir: str,
                               training: dict, sizing: dict, seed: int, report_to: str = "none") -> dict:
    """train_student for `train_processes` > 1: one process per GPU of the job, each training on its
    rows of every batch (sizing.<size>.train_micro_batch each; fsdp_arguments). This process keeps
    the job's files (resume state, adapters) and starts the training processes; the first of them
    saves the checkpoints. With wandb, the training's logged metrics reach the job's run when the
    training ends (transformers' own WandbCallback would open a run of its own in that process)."""
    if len(adapter_dirs) != training["epochs"]:
        raise ValueError(f"{len(adapter_dirs)} adapter folders for {training['epochs']} epochs")
    load_student_dataset(dataset_path)  # an empty dataset fails here, with its message
    resume_dir = Path(resume_dir)
    checkpoint_dir, stash_dir = resume_dir / "checkpoints", resume_dir / "adapters"
    last = resume_checkpoint(resume_dir, resume_fingerprint(model_dir, dataset_path, training, seed))
    processes = train_processes(train_sizing(sizing))
    threads = max(1, torch.get_num_threads() // processes)
    log.info("training in %d processes, %d CPU threads each", processes, threads)
    metrics, history = run_processes(processes, "sublim.train:train_process", {
        "model_dir": model_dir, "dataset_path": dataset_path, "checkpoint_dir": str(checkpoint_dir),
        "stash_dir": str(stash_dir), "last": last, "training": training, "sizing": sizing, "seed": seed,
        "threads": threads}, resume_dir / "launch")
    if report_to == "wandb":
        log_history_to_wandb(history)
    export_adapters(stash_dir, adapter_dirs)
    shutil.rmtree(resume_dir)
    return metrics


def train_process(model_dir: str, dataset_path: str, checkpoint_dir: str, stash_dir: str, last: str | None,
                  training: dict, sizing: dict, seed: int, threads: int) -> tuple[dict, list[dict]]:
    """One of the training processes (sublim.launch starts it and sets its rank). Returns its final
    metrics and logged history."""
    rank = int(os.environ["RANK"])
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        os.environ["ACCELERATE_USE_FSDP"] = "true"  # so that from_pretrained reads the weights on rank 0 only
    dataset = load_student_dataset(dataset_path)
    # the process group must exist before the model loads, for rank 0's weights to be the ones shared
    sft_config(training, sizing, seed, Path(checkpoint_dir)).device  # noqa: B018
    set_seed(seed)  # before the LoRA weights are drawn, as in train_student
    model = load_student(model_dir, sizing)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = build_trainer(model, tokenizer, dataset, training, sizing, seed, Path(checkpoint_dir),
                            [StashOnMainProcess(Path(stash_dir))])
    result = trainer.train(resume_from_checkpoint=last)
    return result.metrics, trainer.state.log_history


def log_history_to_wandb(history: list[dict]) -> None:
    """The trainer's logged entries into the job's wandb run, as transformers' WandbCallback names them."""
    import wandb
    from transformers.integrations.integration_utils import rewrite_logs

    for entry in history:
        step = entry.get("step")
        wandb.log({**rewrite_logs({k: v for k, v in entry.items() if k != "step"}), "train/global_step": step})
