"""The `lmc` command: readable one-line errors with a non-zero exit, and a working train."""

import json

import pytest

from lmc.cli import main

SMALL = ["--model", "mlp", "--model-option", "widths=16", "--batch-size", "64", "--no-progress"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet99"], "unknown model 'resnet99'; valid models: conv1d, conv2"),
        (["--dataset", "imagenet"], "unknown data set 'imagenet'; valid data sets: cifar10"),
        (["--lr", "-0.1"], "learning rate must be a positive number, got -0.1"),
        (["--batch-size", "5000"], "batch size 5000 is larger than the data set (4000 examples)"),
        (["--duration", "10 steps"], "cannot read duration '10 steps'"),
        (["--model-option", "widths"], "must be written KEY=VALUE"),
        (["--model-option", "depth=3"], "'depth' for model 'conv1d'; valid options: channels"),
        (["--config", "missing.json"], "config file missing.json does not exist"),
    ],
)
def test_bad_input_gives_one_readable_line(argv, message, capsys, tmp_path, data_dir):
    code = main(["train", *argv, "--runs", str(tmp_path), "--data-dir", str(data_dir),
                 "--no-progress"])
    assert code == 1
    line = _error_line(capsys)
    assert line.startswith("lmc train: error: ") and message in line


def test_nan_loss_keeps_the_last_good_checkpoint(capsys, tmp_path, data_dir):
    code = main(["train", *SMALL, "--lr", "1e6", "--duration", "300it", "--runs", str(tmp_path),
                 "--data-dir", str(data_dir)])
    assert code == 1
    line = _error_line(capsys)
    assert "loss became nan" in line and "the last good checkpoint is" in line
    kept = line.rsplit(" ", 1)[-1]
    assert kept.endswith("step_00000000.npz")


def test_train_from_config_file_then_reuse(capsys, tmp_path, data_dir):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lr": 0.05, "duration": "200it"}))
    argv = ["train", "--config", str(config), *SMALL, "--runs", str(tmp_path / "runs"),
            "--data-dir", str(data_dir), "--save-at", "50it"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "checkpoint" in out and "step_00000200.npz" in out and "test accuracy" in out
    assert main(argv) == 0
    assert "reusing the finished run" in capsys.readouterr().out


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "demo", "list"):
        assert command in out


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "cifar10" in out
