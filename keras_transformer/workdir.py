"""The layout of a training work directory, read by every command after `train`.

WORKDIR/
  config.json        {"model": ..., "training": ..., "decoding": ...}, resolved
  tokenizer.model    the joint SentencePiece model
  checkpoints/       ckpt-<step>.weights.h5, the last few
  model.keras        the model `translate`, `evaluate` and `export` use
  logs/              TensorBoard logs and the learning curve
"""

import json
import os

from keras_transformer.config import DecodingConfig, TrainingConfig, TransformerConfig

CONFIG = "config.json"
TOKENIZER = "tokenizer.model"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"

SECTIONS = {"model": TransformerConfig, "training": TrainingConfig, "decoding": DecodingConfig}


def path(workdir, name):
    return os.path.join(workdir, name)


def read_config(workdir):
    """`config.json` -> {"model": TransformerConfig, "training": ..., "decoding": ...}."""
    file = path(workdir, CONFIG)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{workdir} is not a work directory: {file} is missing")
    try:
        with open(file, encoding="utf-8") as handle:
            values = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from None
    missing = sorted(set(SECTIONS) - set(values))
    if missing:
        raise ValueError(f"{file}: missing section(s) {missing}")
    try:
        return {name: kind.from_dict(values[name]) for name, kind in SECTIONS.items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"{file}: {error}") from None


def write_config(workdir, configs):
    """Writes the three records as `config.json` (atomically)."""
    os.makedirs(workdir, exist_ok=True)
    file = path(workdir, CONFIG)
    temporary = f"{file}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({name: configs[name].to_dict() for name in SECTIONS}, handle, indent=2)
        handle.write("\n")
    os.replace(temporary, file)


def model_files(workdir):
    """`(model.keras path, tokenizer path, DecodingConfig)` of a trained work directory."""
    configs = read_config(workdir)
    files = [path(workdir, MODEL), path(workdir, TOKENIZER)]
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{file} is missing: train (or average checkpoints) in {workdir} first"
            )
    return (*files, configs["decoding"])
