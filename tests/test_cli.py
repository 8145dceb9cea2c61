"""The `lmc` command: readable one-line errors with a non-zero exit, and a working train."""

import json
from pathlib import Path

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


def test_interpolate_spawn_instability_and_plot(capsys, tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default results go to ./lmc_results
    runs, common = tmp_path / "runs", ["--runs", str(tmp_path / "runs"),
                                       "--data-dir", str(data_dir)]
    small = [*SMALL, "--duration", "100it", "--lr", "0.05"]
    for seed in ("0", "1"):
        assert main(["train", *small, "--seed", seed, "--save-at", "20it", *common]) == 0
    finals = sorted(runs.glob("*/checkpoints/step_00000100.npz"))
    assert len(finals) == 2
    capsys.readouterr()

    out = tmp_path / "lmc.json"
    assert main(["interpolate", str(finals[0]), str(finals[1]), "--alphas", "5", "--out", str(out),
                 "--data-dir", str(data_dir)]) == 0
    printed = capsys.readouterr().out
    assert "error (pts): mean" in printed and "test" in printed
    record = json.loads(out.read_text())
    assert record["kind"] == "interpolation" and len(record["alphas"]) == 5
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".pdf").exists()

    out.with_suffix(".png").unlink()
    assert main(["plot", str(out)]) == 0
    assert out.with_suffix(".png").exists()
    figure = tmp_path / "figs" / "barrier"
    assert main(["interpolate", str(finals[0]), str(finals[1]), "--alphas", "3", "--splits",
                 "test", "--figure", str(figure), "--data-dir", str(data_dir)]) == 0
    assert figure.with_suffix(".pdf").exists()
    assert "results    lmc_results/interpolation-" in capsys.readouterr().out

    early = finals[0].with_name("step_00000020.npz")
    assert main(["spawn", str(early), "--children", "2", "--alphas", "5", "--no-progress",
                 "--data-dir", str(data_dir)]) == 0
    assert "test error barrier between children" in capsys.readouterr().out
    assert main(["spawn", str(finals[0].parent.parent), "--data-dir", str(data_dir)]) == 1
    assert "give --step" in _error_line(capsys)

    out = tmp_path / "instability.json"
    assert main(["instability", *small, "--spawn-steps", "0it,20it", "--alphas", "5",
                 "--out", str(out), *common]) == 0
    assert "k =     20" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert [p["step"] for p in record["points"]] == [0, 20]
    assert Path(f"{out.with_suffix('')}_curves.png").exists()
    # --align: the same children (reused), also interpolated after weight matching
    out = tmp_path / "instability_aligned.json"
    assert main(["instability", *small, "--spawn-steps", "20it", "--alphas", "5", "--align",
                 "weight", "--out", str(out), *common]) == 0
    assert "aligned" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["align"] == "weight" and "aligned_error_barrier" in record["points"][0]


def test_interpolate_errors_are_one_line(capsys, tmp_path, data_dir):
    assert main(["interpolate", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 1
    assert "a.npz does not exist" in _error_line(capsys)
    (tmp_path / "c.json").write_text(json.dumps({"kind": "histogram"}))
    assert main(["plot", str(tmp_path / "c.json")]) == 1
    line = _error_line(capsys)
    assert "unknown kind 'histogram'; valid kinds: " in line
    assert "interpolation" in line and "instability" in line


def test_sharpness_of_a_checkpoint_and_along_a_path(capsys, tmp_path, data_dir):
    common = ["--runs", str(tmp_path / "runs"), "--data-dir", str(data_dir)]
    for seed in ("0", "1"):
        assert main(["train", *SMALL, "--duration", "60it", "--seed", seed, *common]) == 0
    a, b = sorted((tmp_path / "runs").glob("*/checkpoints/step_00000060.npz"))
    small = ["--examples", "256", "--batch-size", "128", "--steps", "20", "--probes", "8",
             "--data-dir", str(data_dir)]
    out = tmp_path / "sharp.json"
    capsys.readouterr()
    assert main(["sharpness", str(a), "--top-k", "2", "--plot", "--out", str(out), *small]) == 0
    printed = capsys.readouterr().out
    assert "λ_1 = " in printed and "trace (hutchinson)" in printed
    record = json.loads(out.read_text())
    assert record["kind"] == "sharpness" and record["examples"] == 256
    assert len(record["top_eigenvalues"]["eigenvalues"]) == 2
    assert out.with_suffix(".png").exists()  # the spectral density

    out = tmp_path / "path.json"
    assert main(["sharpness", "--path", str(a), str(b), "--alphas", "3", "--out", str(out),
                 *small]) == 0
    record = json.loads(out.read_text())
    assert record["kind"] == "sharpness_path" and len(record["lambda_max"]) == 3
    assert out.with_suffix(".pdf").exists()
    assert main(["sharpness", *small]) == 1
    assert "give a checkpoint, or --path A B" in _error_line(capsys)


def test_every_command_has_help_without_outside_references(capsys):
    from lmc.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert list(commands) == ["train", "demo", "interpolate", "align", "spawn", "instability",
                              "imp", "prune-ratio", "sharpness", "scores", "plot",
                              "list"]
    for name, sub in commands.items():
        text = sub.format_help()
        assert "SPEC" not in text, name
