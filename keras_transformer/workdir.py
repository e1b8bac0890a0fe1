"""The layout of a training work directory, read by every command after `train`.

WORKDIR/
  config.json        {"model": ..., "training": ..., "decoding": ...}, resolved; the
                     model section names its "architecture" unless it is a Transformer
  tokenizer.model    the joint SentencePiece model
  checkpoints/       ckpt-<step>.weights.h5, the last few
  model.keras        the model `translate`, `evaluate` and `export` use
  logs/              history.csv, TensorBoard logs and the learning curve

Also the one way files of the package are written (`atomic_write`) and the
one reader of `history.csv`.
"""

import contextlib
import csv
import json
import os
import re

from keras_transformer.config import (
    ARCHITECTURES,
    DecodingConfig,
    TrainingConfig,
    TransformerConfig,
)

CONFIG = "config.json"
TOKENIZER = "tokenizer.model"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = os.path.join(LOGS, "history.csv")  # a row per epoch (Keras's CSVLogger)
STEPS = os.path.join(LOGS, "steps.csv")  # a row every --log-every steps and per validation
CHECKPOINT = re.compile(r"^ckpt-(\d+)\.weights\.h5$")

SECTIONS = {"model": TransformerConfig, "training": TrainingConfig, "decoding": DecodingConfig}


def path(directory, name):
    return os.path.join(directory, name)


@contextlib.contextmanager
def atomic_write(file):
    """Yields a temporary path beside `file`, renamed onto `file` when the block succeeds.

    A process killed while writing leaves `file` as it was, never half
    written. The temporary name ends with `file`'s own name, so writers that
    go by the suffix (`model.save`, `save_weights`) accept it.

        with atomic_write("out.txt") as temporary:
            with open(temporary, "w") as handle: ...
    """
    directory, name = os.path.split(os.path.abspath(file))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f"tmp-{os.getpid()}-{name}")
    try:
        yield temporary
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    os.replace(temporary, file)


def read_config(directory):
    """`config.json` -> {"model": TransformerConfig, "training": ..., "decoding": ...}."""
    file = path(directory, CONFIG)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{directory} is not a work directory: {file} is missing")
    try:
        with open(file, encoding="utf-8") as handle:
            values = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: not valid JSON ({error})") from None
    missing = sorted(set(SECTIONS) - set(values))
    if missing:
        raise ValueError(f"{file}: missing section(s) {missing}")
    try:
        configs = {name: kind.from_dict(values[name]) for name, kind in SECTIONS.items()
                   if name != "model"}  # fmt: skip
        configs["model"] = model_config(values["model"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{file}: {error}") from None
    return configs


def model_config(values):
    """The model section of `config.json` -> its record, by its `architecture`."""
    values = dict(values)
    architecture = values.pop("architecture", "transformer")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown model architecture {architecture!r}; choose one of {list(ARCHITECTURES)}"
        )
    return ARCHITECTURES[architecture].from_dict(values)


def section_dict(name, record, named=False):
    """A record as `config.json` holds it: the model section names its architecture
    unless it is the Transformer (always, with `named`)."""
    values = record.to_dict()
    if name == "model" and (named or record.ARCHITECTURE != TransformerConfig.ARCHITECTURE):
        values = {"architecture": record.ARCHITECTURE, **values}
    return values


def write_config(directory, configs):
    """Writes the three records as `config.json` (atomically)."""
    with atomic_write(path(directory, CONFIG)) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            records = {name: section_dict(name, configs[name]) for name in SECTIONS}
            json.dump(records, handle, indent=2)
            handle.write("\n")


def model_files(directory):
    """`(model.keras path, tokenizer path, DecodingConfig)` of a trained work directory."""
    configs = read_config(directory)
    files = [path(directory, MODEL), path(directory, TOKENIZER)]
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"{file} is missing: train (or average checkpoints) in {directory} first"
            )
    return (*files, configs["decoding"])


def checkpoint_path(directory, step):
    return os.path.join(directory, CHECKPOINTS, f"ckpt-{step}.weights.h5")


def checkpoints(directory):
    """`[(step, path), ...]` of the work directory's checkpoints, oldest first."""
    folder = path(directory, CHECKPOINTS)
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = CHECKPOINT.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def append_row(csv_path, row, columns):
    """Appends `row` (a dict; missing and None cells stay empty) to a CSV file with `columns`."""
    new = not os.path.isfile(csv_path)
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    with open(csv_path, "a", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(columns)
        writer.writerow(["" if row.get(name) is None else float(row[name]) for name in columns])


def drop_rows_after(directory, step):
    """Drops the log rows (`history.csv`, `steps.csv`) of steps after `step`.

    A resumed run replays the steps after its checkpoint; the rows a killed
    run logged for them describe training that was thrown away, and would
    repeat in the learning curve and in the minutes counted before. (What
    TensorBoard's `purge_step` does for its events.)
    """
    for name in (HISTORY, STEPS):
        csv_path = path(directory, name)
        if not os.path.isfile(csv_path):
            continue
        with open(csv_path, encoding="utf-8", newline="") as file:
            rows = list(csv.reader(file))
        if not rows or "step" not in rows[0]:
            continue
        column = rows[0].index("step")
        kept = [rows[0]] + [row for row in rows[1:] if not _after(row, column, step)]
        if len(kept) < len(rows):
            with atomic_write(csv_path) as temporary:
                with open(temporary, "w", encoding="utf-8", newline="") as file:
                    csv.writer(file).writerows(kept)


def _after(row, column, step):
    value = _number(row[column]) if column < len(row) else None
    return value is not None and value > step


def read_history(history_csv):
    """A `CSVLogger` file as a list of rows `{column: float or None}`.

    A cell is None where Keras wrote "NA" (a key missing that epoch) or
    nothing; a missing file reads as no rows.
    """
    if not os.path.isfile(history_csv):
        return []
    with open(history_csv, encoding="utf-8") as file:
        return [{name: _number(text) for name, text in row.items()} for row in csv.DictReader(file)]


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def apply_overrides(configs, assignments):
    """Applies `--set` assignments, `["key=value", ...]`, to a dict of records as `config.json`'s.

    A key is `section.field` (`model.dropout`, `training.warmup_steps`,
    `decoding.beam_size`) or a bare field name that only one section has.
    `model.architecture=recurrent` puts the recurrent baseline's default
    architecture, for the same vocabulary, in place of the Transformer's
    (applied before the other `model.` keys, which then set its fields).

    Returns:
        A new dict of records.
    """
    configs = dict(configs)
    grouped = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        section, dot, field = key.strip().rpartition(".")
        if not sep:
            raise ValueError(f"Expected key=value, received {assignment!r}")
        if not dot:
            owners = [name for name, record in configs.items() if field in record.to_dict()]
            if len(owners) != 1:
                known = sorted(f"{name}.{f}" for name, r in configs.items() for f in r.to_dict())
                reason = "is ambiguous" if owners else "is unknown"
                raise ValueError(f"Key {field!r} in {assignment!r} {reason}. Known keys: {known}")
            section = owners[0]
        if section not in configs:
            raise ValueError(
                f"Unknown section {section!r} in {assignment!r}. Sections: {sorted(configs)}"
            )
        grouped.setdefault(section, []).append(f"{field}={value}")
    model_items = grouped.get("model", [])
    chosen = [item.partition("=")[2].strip() for item in model_items
              if item.startswith("architecture=")]  # fmt: skip
    if chosen:
        configs["model"] = model_config(
            {"architecture": chosen[-1], "vocab_size": configs["model"].vocab_size}
        )
        grouped["model"] = [item for item in model_items if not item.startswith("architecture=")]
    for section, items in grouped.items():
        configs[section] = configs[section].override(items)
    return configs


def differences(old, new):
    """`["section.field: old -> new", ...]` between two dicts of records."""
    lines = []
    for section in sorted(set(old) | set(new)):
        before = section_dict(section, old[section], named=True) if section in old else {}
        after = section_dict(section, new[section], named=True) if section in new else {}
        for field in sorted(set(before) | set(after)):
            if before.get(field) != after.get(field):
                lines.append(f"{section}.{field}: {before.get(field)!r} -> {after.get(field)!r}")
    return lines
