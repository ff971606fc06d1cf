"""Training throughput for the tracker: a transformers callback (kept apart from sublim.tracking,
which the Snakefile imports at parse time and must stay light)."""

from __future__ import annotations

import time

from transformers import TrainerCallback


class Throughput(TrainerCallback):
    """Per optimizer step: seconds, samples/s and (when the trainer counts them) tokens/s, logged
    beside transformers' own train/* metrics on the same train/global_step axis."""

    def __init__(self):
        self.started = None
        self.tokens_before = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.tokens_before = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        import wandb

        if self.started is None or wandb.run is None:
            return
        seconds = time.perf_counter() - self.started
        samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        metrics = {"train/step_seconds": seconds, "train/samples_per_second": samples / seconds,
                   "train/global_step": state.global_step}
        if tokens := state.num_input_tokens_seen - self.tokens_before:
            metrics["train/tokens_per_second"] = tokens / seconds
        wandb.log(metrics)
