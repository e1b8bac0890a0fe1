import json
import subprocess
import sys

import keras_transformer as kt


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "keras_transformer", *args], capture_output=True, text=True
    )


def test_presets_print_the_configs():
    result = run("presets", "--vocab-size", "100")
    assert result.returncode == 0, result.stderr
    configs = json.loads(result.stdout)
    assert kt.TransformerConfig.from_dict(configs["big"]) == kt.TransformerConfig.big(100)
    assert set(configs) == {"tiny", "small", "base", "big"}


def test_bad_input_exits_non_zero_with_a_message():
    result = run("presets", "--vocab-size", "0")
    assert result.returncode == 2 and "vocab_size=0" in result.stderr
    unknown = run("fly")
    assert unknown.returncode == 2 and "invalid choice: 'fly'" in unknown.stderr
