"""A misspelt training key is one line with the closest valid keys; --help lists the shipped configs."""
import subprocess
import sys

from tokbench.training.cli import argument_error_message, closest_keys, shipped_config_names

VALID = ["--model.lr", "--model.min_lr_ratio", "--model.betas", "--model.ema_decay", "--trainer.max_steps",
         "--trainer.devices", "--data.root", "--data.batch_size"]


def test_closest_keys_prefers_the_same_section_and_initials():
    assert closest_keys("--model.learning_rate", VALID)[0] == "--model.lr"
    assert closest_keys("--trainer.max_step", VALID)[0] == "--trainer.max_steps"
    assert closest_keys("--data.batchsize", VALID)[0] == "--data.batch_size"
    assert closest_keys("--zzz.qqqq", VALID) == []


def test_argument_error_message_is_one_line_with_suggestions():
    msg = argument_error_message("unrecognized arguments: --model.learning_rate 1e-3", VALID)
    assert "\n" not in msg and "--model.learning_rate: did you mean --model.lr" in msg


def run(*argv):
    return subprocess.run([sys.executable, "-m", "tokbench", *argv], capture_output=True, text=True, timeout=600)


def test_train_with_a_misspelt_key_prints_one_line():
    out = run("train", "--config", "vq_tiny", "--model.learning_rate", "1e-3")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokbench: error:"), out.stderr
    assert "did you mean --model.lr" in lines[0]


def test_gen_fit_with_a_misspelt_key_prints_one_line(tmp_path):
    out = run("gen", "fit", "--config", "gpt_tiny", "--tokens", str(tmp_path), "--modle.lr", "3")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and "did you mean --model.lr" in lines[0], out.stderr


def test_help_lists_the_shipped_configs():
    names = shipped_config_names()
    assert "vq_tiny" in names and "gpt_tiny" in shipped_config_names("tokbench.generation")
    text = " ".join(run("train", "--help").stdout.split())
    assert all(name in text for name in names)
    gen = " ".join(run("gen", "--help").stdout.split())
    assert all(name in gen for name in shipped_config_names("tokbench.generation"))
