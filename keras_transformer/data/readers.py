"""Parallel-corpus readers with validation.

Two formats: aligned plain-text files (`train.en` + `train.de`, one sentence
per line, UTF-8, optionally `.gz`) and tab-separated pairs (the Tatoeba/Anki
format: source, target, optional attribution). Reading never writes anything.
Pairs with an empty side are skipped and counted in one warning line that
names the first such line.
"""

import gzip
import logging
import os

logger = logging.getLogger("keras_transformer")


class CorpusError(ValueError):
    """A corpus file is missing, misaligned or not UTF-8; the message says where."""


def read_lines(path):
    """All lines of a UTF-8 text file (`.gz` accepted), without line endings."""
    if not os.path.isfile(path):
        raise CorpusError(f"No such corpus file: {path}")
    opener = gzip.open if str(path).endswith(".gz") else open
    lines = []
    with opener(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CorpusError(
                    f"{path}, line {number}: not valid UTF-8 ({error.reason} at byte "
                    f"{error.start}: {raw[max(0, error.start - 10) : error.start + 10]!r})"
                ) from None
            lines.append(line.rstrip("\r\n"))
    return lines


def read_parallel(source_path, target_path):
    """Reads aligned files into `[(source, target), ...]`.

    Raises:
        CorpusError: a missing file (its path), different line counts (both
            counts), invalid UTF-8 (file and line number).
    """
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise CorpusError(
            f"Misaligned corpus: {source_path} has {len(sources)} lines but "
            f"{target_path} has {len(targets)}"
        )
    places = [
        (f"{source_path if not s.strip() else target_path}, line {n}")
        for n, (s, t) in enumerate(zip(sources, targets, strict=True), start=1)
        if not s.strip() or not t.strip()
    ]
    return _keep_complete(zip(sources, targets, strict=True), places)


def read_tsv(path, source_column=0, target_column=1):
    """Reads tab-separated pairs (source, target, optional further columns)."""
    lines = read_lines(path)
    pairs, places = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            places.append(f"{path}, line {number}")
            continue
        columns = line.split("\t")
        if len(columns) <= max(source_column, target_column):
            raise CorpusError(
                f"{path}, line {number}: expected at least "
                f"{max(source_column, target_column) + 1} tab-separated columns, "
                f"found {len(columns)}: {line[:80]!r}"
            )
        pairs.append((columns[source_column], columns[target_column]))
        if not columns[source_column].strip() or not columns[target_column].strip():
            places.append(f"{path}, line {number}")
    return _keep_complete(pairs, places)


def _keep_complete(pairs, places):
    kept = [(s.strip(), t.strip()) for s, t in pairs if s.strip() and t.strip()]
    if places:
        logger.warning(
            "Skipped %d pair(s) with an empty side; the first at %s", len(places), places[0]
        )
    return kept
