"""Translation quality on real corpora: the paper's recipe against the keras.io recipe.

Every run trains for the same wall-clock budget on this machine (or, with
`--steps`, for the same number of optimizer steps), in its own subprocess,
then translates the task's test split and scores it with detokenized,
case-sensitive sacreBLEU and chrF.

Tasks (from `--data`, default `../shared/data`):

- `multi30k-en-de`, `multi30k-de-en`: Multi30k task 1, scored on `test2016`;
- `tatoeba-en-es`: the Tatoeba/Anki English-Spanish pairs, scored on `test`.

Runs:

- `ours`: the paper's recipe (`small` preset, one joint BPE vocabulary shared
  by both sides and the output projection, label smoothing 0.1, the warmup
  schedule, beam 4 with alpha 0.6, the last checkpoints averaged). It is also
  scored with greedy search and with the last checkpoint alone: two ablations
  at no extra training cost.
- `peer`: the recipe of the keras.io example "English-to-Spanish translation
  with a sequence-to-sequence Transformer" in its keras-hub form, written
  anew here: one WordPiece vocabulary per language (of the same size as
  ours), `TokenAndPositionEmbedding`, one `TransformerEncoder` and one
  `TransformerDecoder` (256 wide, 8 heads, 2048 feed-forward), dropout 0.5
  before a softmax layer, RMSprop, batches of 64 pairs cut to 40 tokens,
  greedy decoding with keras-hub's `GreedySampler`. Unlike the example, the
  text keeps its case (the scores are case-sensitive), the embeddings mask
  padding (`mask_zero=True`, as the example's text advises), each
  translation is cut at its first end token, and the spaces WordPiece puts
  around punctuation are taken out again (`¿ Dónde` -> `¿Dónde`, `man ' s`
  -> `man's`), so BLEU compares words, not tokenization.
- `no-smoothing`, `pre-ln`, `untied`: `ours` with label smoothing 0,
  pre-layer normalization, or separate source, target and output embeddings.
- `batch-norm`, `masked-batch-norm`, `learned-positions`, `heads-1`,
  `heads-8`, `heads-16`, `key-32`, `key-16`, `layers-2`, `ffn-2048`,
  `no-dropout`, `dropout-0.3`:
  `ours` with one of the paper's alternatives (docs/experiments.md), best
  compared at equal `--steps`; `bf16`: `ours` trained under the
  `mixed_bfloat16` policy (docs/precision.md).
- `lstm`: the recurrent baseline (`kt.RecurrentBaseline`, an LSTM
  encoder-decoder with attention, as many parameters as `small`) trained and
  decoded by our recipe, best compared with `ours` at equal `--budget`.

Results go to `--out` (default `runs/quality`): one folder per task and run
with `result.json`, the hypotheses, the training log and the learning curve
(`learning_curve.png`: validation loss and greedy BLEU against steps and
minutes). A run whose `result.json` exists for the same options is not
repeated, so the matrix can be filled in over several invocations; one
measured with other options (budget, vocabulary, recipe, ...) is left as it
is and the script stops and names it (`--rerun` replaces it, another
`--out` keeps both). A `--steps` run of ours or an ablation that was
stopped (a kill, the end of a session) resumes from its last checkpoint
when the same command is given again, with the same data order, so a
two-hour run can be made in parts; an unfinished `--budget` run starts
again. The table at the end gives each run's scores and, per task, the ablations as
BLEU deltas, ours minus the other. `--rescore` scores the stored
hypotheses again (after a change to scoring or to the peer's detokenization)
without training.

    .venv/bin/python benchmarks/quality.py --budget 60
    .venv/bin/python benchmarks/quality.py --budget 15 --tasks multi30k-en-de --runs ours,peer
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_io_peer  # noqa: E402
from harness import print_table  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Task:
    folder: str
    source: str
    target: str
    test: str


TASKS = {
    "multi30k-en-de": Task("multi30k", "en", "de", "test2016"),
    "multi30k-de-en": Task("multi30k", "de", "en", "test2016"),
    "tatoeba-en-es": Task("tatoeba-anki-spa-eng", "en", "es", "test"),
}

# What `ours` sets beyond the `small` preset and the paper's defaults: a CPU
# step holds about 2,000 target tokens (the paper: 25,000 on 8 GPUs), so an
# hour is about 2,400 steps; the warmup is shortened to 200 steps and the
# rate scaled by 0.25 (after 15 minutes on Multi30k en-de: 22.5 BLEU, against
# 20.2 with warmup 800 at the full rate).
RECIPE = [
    "training.max_tokens=2048",
    "training.warmup_steps=200",
    "training.learning_rate_scale=0.25",
]
ABLATIONS = {
    "no-smoothing": ["training.label_smoothing=0"],
    "pre-ln": ["model.normalize_first=true"],
    "untied": ["model.share_embeddings=false"],
    # The paper's questions (docs/experiments.md): batch norm for layer norm,
    # learned positions (Table 3, row E), heads at constant compute (row A),
    # dropout (row D).
    "batch-norm": ["model.normalization=batch"],
    "masked-batch-norm": ["model.normalization=masked_batch"],
    "learned-positions": ["model.position_encoding=learned"],
    "heads-1": ["model.num_heads=1"],
    "heads-16": ["model.num_heads=16"],
    "no-dropout": ["model.dropout=0"],
    # More of Table 3 at equal steps: heads (A), key size (B), model size (C), dropout (D).
    "heads-8": ["model.num_heads=8"],
    "key-32": ["model.key_dim=32"],
    "key-16": ["model.key_dim=16"],
    "layers-2": ["model.num_layers=2"],
    "ffn-2048": ["model.intermediate_dim=2048"],
    "dropout-0.3": ["model.dropout=0.3"],
    # Recurrence (docs/experiments.md): the LSTM-attention baseline, matched to
    # `small` in parameters, through the same pipeline, best compared at equal
    # `--budget` minutes.
    "lstm": ["model.architecture=recurrent"],
    # Mixed precision (docs/precision.md): bf16 BLEU against float32's at equal steps.
    "bf16": ["training.precision=mixed_bfloat16"],
}
RUNS = ("ours", "peer", *ABLATIONS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join("runs", "quality"))
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated")
    parser.add_argument("--budget", type=float, default=60.0, help="training minutes per run")
    parser.add_argument(
        "--steps",
        type=int,
        help="train every run for this many optimizer steps instead of --budget minutes "
        "(ablations compared at equal steps, as in the paper's Table 3, whatever the "
        "machine's speed)",
    )
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument(
        "--validate-every", type=int, default=0,
        help="also validate (loss, greedy BLEU) every N steps, for finer learning curves; "
        "0: once an epoch",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a change to our recipe, for `ours` and its ablations (as in the CLI)",
    )  # fmt: skip
    parser.add_argument("--average-last", type=int, default=5)
    parser.add_argument("--test-size", type=int, help="score only the first N test pairs")
    parser.add_argument("--rescore", action="store_true", help="score stored hypotheses again")
    parser.add_argument("--rerun", action="store_true", help="repeat runs that have results")
    parser.add_argument(
        "--smoke", action="store_true",
        help="seconds: tiny models trained 2 steps on a generated corpus in place of --data",
    )  # fmt: skip
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, known in (("tasks", TASKS), ("runs", RUNS)):
        chosen = [item for item in getattr(args, name).split(",") if item]
        unknown = [item for item in chosen if item not in known]
        if unknown:
            parser.error(f"unknown --{name} {unknown}; choose from {list(known)}")
        setattr(args, name, chosen)
    return args


def split_files(args, task, split):
    folder = os.path.join(args.data, task.folder)
    return [os.path.join(folder, f"{split}.{lang}") for lang in (task.source, task.target)]


def read_split(args, task, split):
    from keras_transformer.data import read_parallel

    return read_parallel(*split_files(args, task, split))


def evaluate(directory, name, translate, pairs):
    """Translates the test sources, writes `name.hyp`, returns BLEU, chrF and seconds."""
    began = time.monotonic()
    hypotheses = translate([source for source, _ in pairs])
    seconds = time.monotonic() - began
    with open(os.path.join(directory, f"{name}.hyp"), "w", encoding="utf-8") as file:
        file.writelines(f"{line}\n" for line in hypotheses)
    return {"hypotheses": f"{name}.hyp", "translate_seconds": seconds,
            **scored(name, hypotheses, [target for _, target in pairs])}  # fmt: skip


def scored(name, hypotheses, references):
    from keras_transformer.evaluation import score

    scores = score(hypotheses, references)
    print("\n".join(f"[{name}] {line}" for line in scores.lines()), flush=True)
    return {
        "bleu": scores.bleu,
        "chrf": scores.chrf,
        "bleu_signature": scores.bleu_signature,
        "chrf_signature": scores.chrf_signature,
    }


def rescore(args, name, run, directory, result):
    """Scores a run's stored hypotheses again; the peer's pass through `detokenize`."""
    references = [target for _, target in read_split(args, TASKS[name], TASKS[name].test)]
    references = references[: args.test_size]
    for entry in (result, *result["variants"].values()):
        with open(os.path.join(directory, entry["hypotheses"]), encoding="utf-8") as file:
            hypotheses = [line.rstrip("\n") for line in file]
        if run == "peer":
            hypotheses = [keras_io_peer.detokenize(line) for line in hypotheses]
        entry.update(scored(f"{name}/{run}/{entry['hypotheses']}", hypotheses, references))
    save_result(directory, result)


# --- ours ---------------------------------------------------------------------


def train_ours(args, task, run, directory):
    from keras_transformer import Tokenizer, workdir
    from keras_transformer.decoding import Translator
    from keras_transformer.run import average_checkpoints, minutes_logged, train

    train_pairs, valid_pairs = read_split(args, task, "train"), read_split(args, task, "valid")
    test_pairs = read_split(args, task, task.test)[: args.test_size]
    work = os.path.join(directory, "workdir")
    recipe = settings(args, run)
    # An unfinished `--steps` run kept by `main` resumes from its last checkpoint
    # with its own tokenizer and config (`main` checked they are this recipe's).
    found = workdir.checkpoints(work)
    resumed_at = found[-1][0] if found else None
    if resumed_at is None:
        if os.path.isdir(work):
            shutil.rmtree(work)  # stopped before its first checkpoint
        tokenizer = Tokenizer.train(
            [text for pair in train_pairs for text in pair], args.vocab_size
        )
        configs = recipe_configs(args.preset, tokenizer.vocab_size, recipe)
        workdir.write_config(work, configs)
        tokenizer.save(workdir.path(work, workdir.TOKENIZER))
    else:
        tokenizer = Tokenizer.load(workdir.path(work, workdir.TOKENIZER))
        configs = workdir.read_config(work)
    save_result(directory, {"measured_with": measured_with(args, run), "settings": recipe},
                UNFINISHED)  # fmt: skip
    minutes_before = minutes_logged(work)  # 0.0 for a fresh run
    began = time.monotonic()
    model = train(
        work, tokenizer, train_pairs, valid_pairs, max_steps=args.steps,
        time_budget=None if args.steps else args.budget,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.average_last,
        validate_every=args.validate_every,
    )  # fmt: skip
    minutes = minutes_before + (time.monotonic() - began) / 60
    found = workdir.checkpoints(work)
    result = {
        "steps": found[-1][0],
        "train_minutes": minutes,
        "parameters": model.count_params(),
        "settings": recipe,
    }
    if resumed_at is not None:
        # The minutes of the steps between the last validation and the
        # interruption are not in the log, so a resumed run's minutes are a
        # little short.
        result["resumed_at_step"] = resumed_at
    decoding = configs["decoding"]

    def translator(beam_size):
        return Translator(
            model, tokenizer, beam_size=beam_size, length_penalty=decoding.length_penalty
        ).translate

    def scored_as(name, beam_size):
        return evaluate(directory, name, translator(beam_size), test_pairs)

    scored = {}
    if run == "ours":
        scored["last checkpoint, beam 4"] = scored_as("last-beam4", 4)
    average_checkpoints(model, [path for _, path in found[-args.average_last :]])
    result["averaged_steps"] = [step for step, _ in found[-args.average_last :]]
    scored["averaged, beam 4"] = scored_as("averaged-beam4", 4)
    if run == "ours":
        scored["averaged, greedy"] = scored_as("averaged-greedy", 1)
    result.update(scored.pop("averaged, beam 4"))
    result["variants"] = scored
    logs = workdir.path(work, workdir.LOGS)
    shutil.copy(os.path.join(logs, "learning_curve.png"), directory)
    shutil.copy(os.path.join(logs, "history.csv"), directory)
    return result


# --- the matrix -----------------------------------------------------------------


def worker(args):
    task_name, run = args.worker
    task = TASKS[task_name]
    directory = os.path.join(args.out, task_name, run)
    result = (
        keras_io_peer.train_peer(args, task, directory)
        if run == "peer"
        else train_ours(args, task, run, directory)
    )
    result.update(task=task_name, run=run, measured_with=measured_with(args, run))
    save_result(directory, result)
    if os.path.isfile(os.path.join(directory, UNFINISHED)):
        os.remove(os.path.join(directory, UNFINISHED))


UNFINISHED = "unfinished.json"  # the options of a run still training, for `--steps` resumes


def save_result(directory, result, name="result.json"):
    with open(os.path.join(directory, name), "w", encoding="utf-8") as file:
        json.dump(result, file, indent=1)


def resumable(args, directory, run):
    """The stored options of an unfinished run that `--steps` can resume, else None."""
    if not args.steps or args.rerun or run == "peer":
        return None
    if os.path.isfile(os.path.join(directory, "result.json")):
        return None
    return read_result(os.path.join(directory, UNFINISHED))


# The options every run depends on; `ours` and its ablations also on OURS_OPTIONS
# and on their recipe (`settings`).
SHARED_OPTIONS = ("budget", "steps", "backend", "vocab_size", "test_size")
OURS_OPTIONS = ("preset", "checkpoint_every", "average_last")


def settings(args, run):
    """Our recipe for `run`: KEY=VALUE overrides, a later one replacing an earlier."""
    return RECIPE + args.set + ABLATIONS.get(run, [])


def recipe_configs(preset, vocab_size, items):
    """The model, training and decoding configs of our recipe with `items` applied."""
    from keras_transformer import DecodingConfig, TrainingConfig, TransformerConfig
    from keras_transformer.workdir import apply_overrides

    configs = {
        "model": TransformerConfig.preset(preset, vocab_size),
        "training": TrainingConfig(),
        "decoding": DecodingConfig(),
    }
    return apply_overrides(configs, items)


def recipe_fields(args, items):
    """`{"section.field": value}` of our recipe with `items` applied, to compare recipes."""
    configs = recipe_configs(args.preset, args.vocab_size, items)
    return {f"{name}.{key}": value for name, config in configs.items()
            for key, value in config.to_dict().items()}  # fmt: skip


def measured_with(args, run):
    """The options a result depends on, stored with it."""
    names = SHARED_OPTIONS + (() if run == "peer" else OURS_OPTIONS)
    ignored = {"budget"} if args.steps else set()  # --steps replaces the budget
    return {name: getattr(args, name) for name in names if name not in ignored}


def differences(result, args, run):
    """What this invocation asks for that a stored result was not measured with."""
    stored = result.get("measured_with", {})
    found = [
        f"{name}={stored.get(name)!r} (now {value!r})"
        for name, value in measured_with(args, run).items()
        if stored.get(name) != value
    ]
    if run != "peer":
        before = recipe_fields(args, result.get("settings", []))
        now = recipe_fields(args, settings(args, run))
        found += [
            f"{key}={before[key]!r} (now {now[key]!r})" for key in now if before[key] != now[key]
        ]
    return found


def training_length(args):
    return f"{args.steps} steps" if args.steps else f"{args.budget:g} minutes"


def read_result(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


SMOKE = ["model.hidden_dim=32", "model.max_length=32", "training.max_tokens=256"]


def smoke_corpus(folder, task):
    """Number words (`kt.data.number_words`) laid out as `task`'s corpus under `folder`."""
    from keras_transformer.data import number_words

    other = task.target if task.source == "en" else task.source
    for split, size in (("train", 300), ("valid", 20), (task.test, 8)):
        drawn = number_words("test" if split == task.test else split, other, size=size)
        for side, index in (("en", 0), (other, 1)):
            path = os.path.join(folder, task.folder, f"{split}.{side}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as file:
                file.writelines(f"{pair[index]}\n" for pair in drawn)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.smoke:
        args.data = os.path.join(args.out, "smoke-data")
        for name in args.tasks:
            smoke_corpus(args.data, TASKS[name])
        args.steps, args.preset, args.vocab_size, args.test_size = 2, "tiny", 100, 4
        args.set = SMOKE + args.set
    missing = sorted(
        {path for name in args.tasks for split in ("train", "valid", TASKS[name].test)
         for path in split_files(args, TASKS[name], split) if not os.path.isfile(path)}
    )  # fmt: skip
    if missing:
        print(f"SKIPPED: corpus files missing under {args.data}: {missing}")
        return 0
    # A finished run measured with other options is kept, never replaced unasked.
    conflicts = []
    for name in args.tasks:
        for run in args.runs:
            path = os.path.join(args.out, name, run, "result.json")
            stored = None if args.rerun else read_result(path)
            unfinished = resumable(args, os.path.dirname(path), run)
            if stored is None and unfinished is not None:
                stored, path = unfinished, os.path.join(os.path.dirname(path), UNFINISHED)
            found = differences(stored, args, run) if stored is not None else []
            if found:
                conflicts.append(f"{path}: {'; '.join(found)}")
    if conflicts:
        listed = "\n  ".join(conflicts)
        print(
            "Stored results (or unfinished runs) were measured with other options; pass "
            f"--rerun to replace them or --out to keep them:\n  {listed}",
            file=sys.stderr,
        )
        return 2
    results = {}
    for name in args.tasks:
        for run in args.runs:
            directory = os.path.join(args.out, name, run)
            result_path = os.path.join(directory, "result.json")
            result = None if args.rerun else read_result(result_path)
            if result is not None and args.rescore:
                rescore(args, name, run, directory, result)
            if result is None:
                resuming = resumable(args, directory, run) is not None
                if os.path.isdir(directory) and not resuming:
                    shutil.rmtree(directory)  # an unfinished --budget run, or --rerun
                os.makedirs(directory, exist_ok=True)
                again = ", resumed from its last checkpoint" if resuming else ""
                print(f"=== {name} / {run}: {training_length(args)} of training{again} ===",
                      flush=True)  # fmt: skip
                command = [sys.executable, os.path.abspath(__file__), "--worker", name, run,
                           "--data", args.data, "--out", args.out, "--budget", str(args.budget),
                           "--vocab-size", str(args.vocab_size), "--preset", args.preset,
                           "--checkpoint-every", str(args.checkpoint_every),
                           "--validate-every", str(args.validate_every),
                           "--average-last", str(args.average_last)]  # fmt: skip
                if args.test_size:
                    command += ["--test-size", str(args.test_size)]
                if args.steps:
                    command += ["--steps", str(args.steps)]
                command += [item for value in args.set for item in ("--set", value)]
                env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
                status = subprocess.run(command, env=env).returncode
                result = read_result(result_path)
                if status or result is None:
                    print(f"=== {name} / {run} failed (exit status {status})", flush=True)
                    continue
            results[name, run] = result
    report(args, results)
    return 0


def report(args, results):
    rows = []
    for (name, run), result in results.items():
        rows.append({
            "task": name, "run": run, "minutes": result["train_minutes"], "steps": result["steps"],
            "bleu": result["bleu"], "chrf": result["chrf"],
        })  # fmt: skip
    print(f"\nTest scores after {training_length(args)} of training ({args.backend}):\n")
    print_table(rows, [("task", "task"), ("run", "run"), ("minutes", "train min"),
                       ("steps", "steps"), ("bleu", "BLEU"), ("chrf", "chrF")])  # fmt: skip
    deltas = []
    for name in args.tasks:
        ours = results.get((name, "ours"))
        if ours is None:
            continue
        compared = {"peer (keras.io recipe)": results.get((name, "peer"))}
        for run in ABLATIONS:
            compared[f"{run} instead"] = results.get((name, run))
        for label, variant in ours["variants"].items():
            compared[f"{label} instead"] = variant
        for label, other in compared.items():
            if other is not None:
                deltas.append({"task": name, "against": label,
                               "delta": ours["bleu"] - other["bleu"]})  # fmt: skip
    if deltas:
        print("\nBLEU of ours (averaged, beam 4) minus the other:\n")
        print_table(deltas, [("task", "task"), ("against", "against"), ("delta", "BLEU delta")])
    signatures = {result["bleu_signature"] for result in results.values()}
    print("\n" + "\n".join(sorted(signatures)))


if __name__ == "__main__":
    sys.exit(main())
