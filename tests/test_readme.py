"""The README and the docs: the Python blocks run as written, and every local link resolves."""

import os
import re
import subprocess
import sys

from helpers import runs_once

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPOSITORY, "README.md")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# [text](target): local targets only, anchors dropped.
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def python_blocks(text):
    return PYTHON_BLOCK.findall(text)


def test_python_blocks_are_found():
    blocks = python_blocks("text\n```python\nx = 1\n```\n\n```python\ny = x\n```\n```sh\nls\n```\n")
    assert blocks == ["x = 1\n", "y = x\n"]


@runs_once
def test_readme_python_blocks_run_as_written(tmp_path):
    # One script, in the README's order, so that later blocks may use earlier names; run in a
    # fresh interpreter (the quick start sets KERAS_BACKEND) in an empty directory (it saves files).
    blocks = python_blocks(read(README))
    assert len(blocks) >= 2, "the README's quick start and layers blocks"
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"README blocks failed:\n{result.stderr[-4000:]}"
    # The quick start prints one line per test sentence and saves the model and tokenizer.
    assert result.stdout.count("(reference: ") == 5, result.stdout[-2000:]
    assert (tmp_path / "number-words.keras").is_file()
    assert (tmp_path / "number-words.model").is_file()


def test_readme_fits_a_few_screens():
    # The detail lives in docs/ and CHANGELOG.md.
    assert len(read(README).splitlines()) <= 260


def test_readme_keeps_the_deviations_table():
    text = read(README)
    assert "## Deviations from the paper" in text
    assert "| what | why | where | restore the paper |" in text


def test_local_links_resolve():
    documents = [README, os.path.join(REPOSITORY, "CHANGELOG.md")]
    documents += [os.path.join(REPOSITORY, "examples", "README.md")]
    docs = os.path.join(REPOSITORY, "docs")
    documents += [os.path.join(docs, name) for name in sorted(os.listdir(docs))]
    broken = []
    checked = 0
    for document in documents:
        if not document.endswith(".md"):
            continue
        for target in LINK.findall(read(document)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            checked += 1
            if not os.path.exists(os.path.join(os.path.dirname(document), target)):
                broken.append(f"{os.path.relpath(document, REPOSITORY)}: {target}")
    assert checked > 10
    assert not broken, broken
