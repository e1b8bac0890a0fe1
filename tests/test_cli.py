import argparse
import io
import json
import subprocess
import sys

import keras
import pytest
from helpers import run_python, runs_once

import keras_transformer as kt
from keras_transformer import cli, commands
from keras_transformer.progress import Progress


def test_presets_print_the_configs():
    # The installed command's launcher, in a process of its own.
    result = subprocess.run(
        [sys.executable, "-m", "keras_transformer_cli", "presets", "--vocab-size", "100"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    configs = json.loads(result.stdout)
    assert kt.TransformerConfig.from_dict(configs["big"]) == kt.TransformerConfig.big(100)
    assert set(configs) == {"tiny", "small", "base", "big"}


@runs_once
def test_the_command_parses_before_keras_loads_and_sets_the_backend_in_this_process():
    code = (
        "import os, sys, keras_transformer_cli\n"
        "try:\n"
        "    keras_transformer_cli.main(['train', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "loaded = {'keras', 'tensorflow', 'jax', 'torch'} & set(sys.modules)\n"
        "assert not loaded, f'--help imported {sorted(loaded)}'\n"
        "assert keras_transformer_cli.main(['presets', '--backend', 'jax']) == 0\n"
        "import keras  # this process's: not switched by running the command again\n"
        "assert keras.backend.backend() == 'jax', keras.backend.backend()\n"
        "assert keras.saving.get_registered_object('keras_transformer>Transformer')\n"
        "assert 'KERAS_TRANSFORMER_DEFER_API' not in os.environ\n"
    )
    run_python(code, "tensorflow")


def test_importing_the_package_registers_what_a_keras_file_names(tmp_path):
    path = str(tmp_path / "tiny.keras")
    kt.build_transformer(kt.TransformerConfig.tiny(vocab_size=20)).save(path)
    code = (
        "import keras, keras_transformer\n"
        f"model = keras.saving.load_model({path!r}, compile=False)\n"
        "assert type(model).__name__ == 'Transformer'\n"
    )
    run_python(code, keras.backend.backend())


def test_bad_input_exits_non_zero_with_a_message(capsys):
    assert cli.main(["presets", "--vocab-size", "0"]) == 2
    assert "vocab_size=0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as unknown:
        cli.main(["fly"])
    assert unknown.value.code == 2 and "invalid choice: 'fly'" in capsys.readouterr().err


class _Stream(io.StringIO):
    def __init__(self, terminal):
        super().__init__()
        self.terminal = terminal

    def isatty(self):
        return self.terminal


@runs_once
def test_progress_redraws_on_a_terminal_and_prints_lines_elsewhere():
    for terminal in (True, False):
        stream = _Stream(terminal)
        progress = Progress(stream=stream)
        progress(64, 100)
        progress(100, 100)
        written = stream.getvalue()
        assert written.count("translated 100/100 sentences") == 1 and written.endswith("\n")
        assert ("\r" in written) is terminal
        assert written.count("\n") == (1 if terminal else 2)


def _subcommands(parser):
    (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return choices


@runs_once
def test_every_flag_has_help_and_shows_its_default(capsys):
    for name, sub in _subcommands(cli.build_parser()).items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    with pytest.raises(SystemExit) as shown:
        cli.main(["train", "--help"])
    assert shown.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--checkpoint-every STEPS steps between saves (default: 1000)" in text
    assert "--keep-checkpoints N the last N are kept (default: 5)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


@runs_once
def test_a_failure_prints_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "nowhere")
    assert cli.main(["translate", "--workdir", missing]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a work directory" in error

    def fails(args):
        raise RuntimeError("the disk\nis full")

    monkeypatch.setattr(commands, "presets", fails)
    assert cli.main(["presets"]) == 1
    error = capsys.readouterr().err
    expected = "error: RuntimeError: the disk is full (--debug shows the traceback)"
    assert error == f"keras-transformer: {expected}\n"
    with pytest.raises(RuntimeError, match="the disk"):
        cli.main(["presets", "--debug"])
