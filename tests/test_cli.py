import io
import json
import subprocess
import sys

import pytest
from helpers import runs_once

import keras_transformer as kt
from keras_transformer import cli
from keras_transformer.progress import Progress


def test_presets_print_the_configs():
    # The installed entry point, in a process of its own.
    result = subprocess.run(
        [sys.executable, "-m", "keras_transformer", "presets", "--vocab-size", "100"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    configs = json.loads(result.stdout)
    assert kt.TransformerConfig.from_dict(configs["big"]) == kt.TransformerConfig.big(100)
    assert set(configs) == {"tiny", "small", "base", "big"}


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
