"""The configuration: presets reproduce each recipe, bad values fail naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from sublim.config import ConfigError, check_yaml_syntax, eval_epochs, kept_epochs, resolve, seed_for, sizing_for
from conftest import REPO


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_both_shipped_configs_resolve():
    for name in ("config.yaml", "demo.yaml"):
        resolve(load(name))


def test_full_grid_is_seed_schedule_with_paper_loss_and_scoring():
    config = resolve(load("config.yaml"))
    assert config["sizes"] == ["0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b"]
    assert len(config["conditions"]) == 16 and config["conditions"][0] == "neutral"
    assert config["runs"] == [1, 2, 3]
    protocol = config["protocol"]
    assert protocol["training"]["epochs"] == 10 and protocol["training"]["effective_batch"] == 60
    assert protocol["training"]["loss"] == "completion_only"
    assert protocol["evaluation"]["scoring"] == "substring"
    assert (protocol["evaluation"]["n_questions"], protocol["evaluation"]["samples_per_question"]) == (50, 20)
    assert eval_epochs(protocol) == list(range(1, 11))
    for size in config["sizes"]:
        assert len(config["models"][size]["revision"]) == 40  # a pinned commit, not a branch


@pytest.mark.parametrize("preset, expected", [
    ("paper", {"epochs": 3, "effective_batch": 66, "loss": "completion_only", "max_tokens": 2048,
               "n_questions": 50, "samples": 100, "scoring": "substring", "prompt_seed": 42}),
    ("seed", {"epochs": 10, "effective_batch": 60, "loss": "full_text", "max_tokens": 128,
              "n_questions": 20, "samples": 5, "scoring": "first_word", "prompt_seed": "run"}),
])
def test_presets_reproduce_each_recipe_by_name(preset, expected):
    config = load("config.yaml")
    config["preset"], config["protocol"] = preset, {}
    protocol = resolve(config)["protocol"]
    training, evaluation = protocol["training"], protocol["evaluation"]
    assert training["epochs"] == expected["epochs"]
    assert training["effective_batch"] == expected["effective_batch"]
    assert training["loss"] == expected["loss"]
    assert protocol["generation"]["max_tokens"] == expected["max_tokens"]
    assert protocol["generation"]["prompt_seed"] == expected["prompt_seed"]
    assert (protocol["generation"]["n_prompts"], protocol["filter"]["n_keep"]) == (30000, 10000)
    assert evaluation["n_questions"] == expected["n_questions"]
    assert evaluation["samples_per_question"] == expected["samples"]
    assert evaluation["scoring"] == expected["scoring"]
    assert training["learning_rate"] == 2e-4 and training["warmup_steps"] == 5
    assert training["lora"] == {"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def broken(change) -> dict:
    config = copy.deepcopy(load("config.yaml"))
    change(config)
    return config


@pytest.mark.parametrize("change, key", [
    (lambda c: c["sizes"].append("13b"), "sizes[7]"),
    (lambda c: c["conditions"].append("red panda"), "conditions[16]"),
    (lambda c: c["conditions"].append("Owl"), "conditions[16]"),
    (lambda c: c["protocol"].update(filter={"n_keep": 0}), "protocol.filter.n_keep"),
    (lambda c: c["protocol"].update(generation={"n_prompts": -5}), "protocol.generation.n_prompts"),
    (lambda c: c["protocol"]["training"].update(epochs=0), "protocol.training.epochs"),
    (lambda c: c.update(preset="fast"), "preset"),
    (lambda c: c.update(runs=[0]), "runs[0]"),
    (lambda c: c["protocol"].update(evaluation={"scoring": "regex"}), "protocol.evaluation.scoring"),
    (lambda c: c["protocol"]["training"].update(epoch=3), "protocol.training"),
    (lambda c: c["protocol"]["training"].update(optimizer="sgd"), "protocol.training.optimizer"),
    (lambda c: c["protocol"]["training"].update(data_seed="fixed"), "protocol.training.data_seed"),
    (lambda c: c.update(sizing={"7b": {"train_micro_batch": 7}}), "sizing.7b.train_micro_batch"),
    (lambda c: c.update(keep_adapters="first"), "keep_adapters"),
    (lambda c: c.update(keep_adapters=[10, 11]), "keep_adapters"),
])
def test_bad_values_fail_naming_the_key(change, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'".replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        resolve(broken(change))


def test_sizing_layers_fallback_default_and_size():
    config = {"sizing": {"default": {"gpus": 1, "mem_mb": 100}, "72b": {"gpus": 2}}}
    assert sizing_for(config, "72b")["gpus"] == 2
    assert sizing_for(config, "7b")["gpus"] == 1
    assert sizing_for(config, "7b")["mem_mb"] == 100
    assert sizing_for(config, "7b")["dtype"] == "auto"


def test_every_default_is_written_once_in_the_schema_and_is_valid():
    from sublim import publish, tracking
    from sublim.config import sizing_defaults

    config = load("config.yaml")
    config.update(sizing={"default": sizing_defaults()}, publish=publish.settings({}), wandb=tracking.settings({}))
    resolve(config)  # the defaults pass their own schema
    assert sizing_for({}, "7b") == sizing_defaults()
    assert publish.settings({"publish": {"enabled": True}})["daily_repo_budget"] == 300
    assert tracking.settings({})["names"]["eval"] == "{size}-{condition}-run-{run}-eval"


def test_the_trainer_and_the_gpu_sharing_take_their_defaults_from_the_schema():
    from sublim.gpu_share import train_threads
    from sublim.train import train_sizing

    defaults = sizing_for({}, "7b")
    assert train_sizing({}) == {key: defaults[key] for key in train_sizing({})}
    assert train_sizing({"lazy_metrics": True})["lazy_metrics"] is True
    assert train_threads(defaults) == defaults["train_threads"]


def test_seed_follows_the_run_or_a_fixed_value():
    assert seed_for("run", "3") == 3
    assert seed_for(42, 3) == 42


def test_a_number_yaml_reads_as_text_gets_the_hint_to_write_it_as_a_float():
    # PyYAML (YAML 1.1), as Snakemake reads config files, takes 2e-4 for a string
    config = load("config.yaml")
    config["protocol"]["training"] = yaml.safe_load("learning_rate: 2e-4")
    assert config["protocol"]["training"]["learning_rate"] == "2e-4"
    with pytest.raises(ConfigError, match=r"'protocol\.training\.learning_rate': '2e-4' is not of type 'number' "
                                          r"\(YAML reads 2e-4 as text: write 2\.0e-4\)"):
        resolve(config)
    config["protocol"]["training"] = yaml.safe_load("learning_rate: 2.0e-4")
    assert resolve(config)["protocol"]["training"]["learning_rate"] == 2e-4


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("preset: seed\nprotocol:\n  training: {epochs: 2\nsizes: [0.5b]\n")
    message = rf"{bad}, line 4, column 6: not valid YAML \(while parsing a flow mapping that starts at line 3: "
    with pytest.raises(ConfigError, match=message + r"expected ',' or '}'"):
        check_yaml_syntax(bad)
    check_yaml_syntax(tmp_path / "absent.yaml")  # a missing file is Snakemake's to report


def test_keep_adapters_names_the_epochs_kept_on_disk():
    config = resolve(load("config.yaml"))  # 10 epochs; the default keeps them all
    assert kept_epochs(config) == list(range(1, 11))
    assert kept_epochs({**config, "keep_adapters": "last"}) == [10]
    assert kept_epochs({**config, "keep_adapters": [10, 5]}) == [5, 10]


def test_only_the_demo_and_test_profiles_rerun_on_code_edits():
    # README, "What triggers a rerun": the GPU and cluster profiles leave `code` out, so an
    # upgrade never silently retrains a grid; demo and slurm-local keep Snakemake's defaults
    triggers = {profile.name: yaml.safe_load((profile / "config.yaml").read_text()).get("rerun-triggers")
                for profile in (REPO / "profiles").iterdir()}
    assert triggers == {"b200": ["mtime", "params", "input", "software-env"],
                        "multi-gpu": ["mtime", "params", "input", "software-env"],
                        "slurm": ["mtime", "params", "input", "software-env"],
                        "demo": None, "slurm-local": None}


def test_expandable_segments_are_set_before_the_student_loads_on_a_gpu(monkeypatch):
    """sizing expandable_segments: PyTorch's allocator setting, only where asked and only on CUDA."""
    import torch

    from sublim import train

    calls = []
    monkeypatch.setattr(train, "set_allocator_settings", calls.append)
    for on, cuda in ((True, False), (False, True), (True, True)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        train.prepare_allocator({"expandable_segments": on})
    assert calls == ["expandable_segments:True"]
    assert sizing_for({}, "32b")["expandable_segments"] is False  # the schema's default
