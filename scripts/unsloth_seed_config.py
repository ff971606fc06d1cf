"""What the seed pipeline's `SFTConfig(...)` became under unsloth (config/README.md, "Where the presets'
trainer settings come from"). Runs unsloth's own signature-rewriting code (`_patch_trl_rl_trainers` in
unsloth/models/rl.py, which needs a GPU to import) on TRL's SFTConfig, then builds the config with the
seed's arguments. Run it in a scratch venv with the seed's lock, not in the project's:

    python -m venv /tmp/seedcfg
    /tmp/seedcfg/bin/pip install torch trl==0.24.0 transformers==4.57.3 accelerate==1.12.0
    pip download --no-deps unsloth==2026.1.3 -d /tmp/w && unzip -q /tmp/w/unsloth-2026.1.3-*.whl -d /tmp/w/u
    /tmp/seedcfg/bin/python scripts/unsloth_seed_config.py /tmp/w/u/unsloth/models/rl.py
"""

from __future__ import annotations

import ast
import inspect
import re
import sys

SHOWN = ("optim", "weight_decay", "seed", "data_seed", "warmup_ratio", "warmup_steps", "learning_rate",
         "lr_scheduler_type", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "max_length", "packing",
         "padding_free", "completion_only_loss", "dataset_num_proc", "loss_type")


def unsloth_replacements(rl_source: str) -> dict:
    """The first `replacements = {...}` of `_patch_trl_rl_trainers`: the new SFTConfig defaults."""
    function = next(n for n in ast.parse(rl_source).body
                    if isinstance(n, ast.FunctionDef) and n.name == "_patch_trl_rl_trainers")
    assignment = next(n for n in ast.walk(function)
                      if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "replacements")
    return ast.literal_eval(assignment.value)


def unsloth_config_class(config_class, replacements: dict):
    """unsloth's rewrite, line for line: the signature as source, each default replaced by regex."""
    empty = inspect.Parameter.empty
    arguments, call_args = ["self"], []
    for name, parameter in inspect.signature(config_class.__init__).parameters.items():
        if name == "self":
            continue
        default = parameter.default
        if default == "\n":
            default = re.escape("\n")
        if default is empty:
            arguments.append(name)
        elif type(default) is str:
            arguments.append(f"{name} = '{default}'")
        elif type(default) in (bool, type(None), int, float, str):
            arguments.append(f"{name} = {default}")
        else:
            continue
        call_args.append(f"{name} = {name}")
    arguments = f"\n{' ' * 8}" + f",\n{' ' * 8}".join(arguments)
    call_args = f"\n{' ' * 12}" + f",\n{' ' * 12}".join(call_args)
    for key, value in replacements.items():
        pattern = f"{key}( = [^,\n]{{1,}})?,\n"
        value = f"'{value}'" if type(value) is str else f"{value}"
        arguments = re.sub(pattern, f"{key} = {value},\n", arguments)
    source = (f"class UnslothSFTConfig(RLConfig):\n    def __init__({arguments},\n        max_seq_length = None,\n"
              f"        **kwargs):\n        super().__init__({call_args},**kwargs)\n"
              f"        self.max_seq_length = max_seq_length\n")
    namespace = {"RLConfig": config_class}
    exec(source, namespace)
    return namespace["UnslothSFTConfig"]


def main() -> None:
    import transformers
    import trl
    from trl import SFTConfig

    replacements = unsloth_replacements(open(sys.argv[1]).read())
    config_class = unsloth_config_class(SFTConfig, replacements)
    # jeqcho/subliminal-learning-scaling-law@cfe63da src/qwen_2_5_scaling/finetuning/trainer.py:191-210 (run 1)
    args = config_class(output_dir="/tmp/unsloth_seed_config", max_seq_length=500, dataset_text_field="text",
                        packing=False, num_train_epochs=10, per_device_train_batch_size=20,
                        gradient_accumulation_steps=3, learning_rate=2e-4, max_grad_norm=1.0,
                        lr_scheduler_type="linear", warmup_steps=5, seed=1, dataset_num_proc=1, logging_steps=10,
                        save_strategy="no", fp16=False, bf16=False, report_to="none")
    if args.max_seq_length:  # UnslothSFTTrainer.__init__ (rl.py "max_length_check")
        args.max_length = args.max_seq_length
    print(f"trl {trl.__version__}, transformers {transformers.__version__}; the seed's SFTConfig under unsloth:")
    for name in SHOWN:
        print(f"  {name:22s} {getattr(args, name)}")
    print(f"  warmup steps used      {args.get_warmup_steps(1670)}")


if __name__ == "__main__":
    main()
