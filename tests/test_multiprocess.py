"""Training in several processes (`train --num-processes N`): JAX's distributed runtime.

The tests that start processes spawn their own JAX backends, so they run
once (in the PyTorch pass), each bounded by a timeout.
"""

import csv
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import runs_once

import keras_transformer as kt
from keras_transformer import cli, multiprocess, workdir
from keras_transformer.data.pipeline import BatchedCorpus, shard_rows

TIMEOUT = 240  # seconds a spawned process may take: a hang fails the test, it never blocks it


class IdTokenizer:
    """Encodes pair `i`'s text "i" as (1 + i % 9) copies of id i + 4, then EOS: the first
    id of a row names its pair, and the lengths spread over several buckets."""

    def encode(self, texts):
        return [[int(text) + 4] * (1 + int(text) % 9) + [kt.EOS_ID] for text in texts]


def pairs_of(dataset):
    """The pair indices of a dataset's rows, all-padding rows left out."""
    found = []
    for inputs, _ in dataset:
        first = inputs[kt.model.ENCODER_INPUT][:, 0].numpy()
        found.extend(int(i) - 4 for i in first if i != kt.PAD_ID)
    return found


@runs_once
@pytest.mark.parametrize("drop_remainder", [False, True])
@pytest.mark.parametrize("processes", [2, 3])
def test_processes_see_every_pair_of_an_epoch_once(processes, drop_remainder):
    pairs = [(str(i), str(i)) for i in range(300)]
    corpus = BatchedCorpus(pairs, IdTokenizer(), 40, 16, (8, 16), seed=3, replicas=processes,
                           drop_remainder=drop_remainder)  # fmt: skip
    whole = pairs_of(corpus.dataset(epochs=(0, 1)))
    shares = [pairs_of(shard_rows(corpus.dataset(epochs=(0, 1)), p, processes))
              for p in range(processes)]  # fmt: skip
    seen = [i for share in shares for i in share]
    assert len(seen) == len(set(seen)), "a pair was seen twice"
    assert sorted(seen) == sorted(whole)  # the one-process run's pairs
    if not drop_remainder:
        assert sorted(seen) == list(range(300))  # the whole corpus
    assert all(abs(len(share) - len(seen) / processes) <= 1 for share in shares)
    # A step's shares have one shape: the rows of one global batch.
    steps = [list(shard_rows(corpus.dataset(epochs=(0, 1)), p, processes)) for p in range(2)]
    for first, second in zip(*steps, strict=True):
        assert first[1].shape == second[1].shape


def test_shard_rows_refuses_an_index_out_of_range():
    dataset = tf.data.Dataset.from_tensors(({"x": tf.zeros((4, 2))}, tf.zeros((4, 2))))
    with pytest.raises(ValueError, match="index=2"):
        shard_rows(dataset, 2, 2)


@runs_once
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:1234"],
         "--process-id 2"),
        (["--num-processes", "2", "--process-id", "-1", "--coordinator", "127.0.0.1:1234"],
         "--process-id -1"),
        (["--num-processes", "2", "--process-id", "0", "--coordinator", "localhost"],
         "--coordinator 'localhost'"),
        (["--num-processes", "2", "--process-id", "0", "--coordinator", "host:99999"],
         "--coordinator 'host:99999'"),
        (["--num-processes", "2", "--process-id", "0"], "--coordinator None"),
        (["--num-processes", "0", "--process-id", "0", "--coordinator", "127.0.0.1:1234"],
         "num_processes=0"),
        (["--num-processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1:1234",
          "--time-budget", "1"], "--time-budget 1.0"),
        # Refused on this (the torch) pass: a valid cluster on a backend that cannot use it.
        (["--num-processes", "2", "--process-id", "1", "--coordinator", "127.0.0.1:1234"],
         "torch backend trains in one process"),
    ],
)  # fmt: skip
def test_bad_cluster_flags_fail_at_once_naming_the_value(tmp_path, capsys, flags, message):
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.json").write_text("kept")
    status = cli.main(["train", "--corpus", "number-words:de", "--workdir", str(work),
                       "--max-steps", "1", *flags])  # fmt: skip
    assert status == 2
    assert message in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["config.json"]
    assert (work / "config.json").read_text() == "kept"
    assert multiprocess.joined() is None


def test_a_coordinator_is_host_and_port():
    assert multiprocess.parse_coordinator("10.0.0.1:1234") == ("10.0.0.1", 1234)
    assert multiprocess.parse_coordinator("[::1]:80") == ("::1", 80)
    assert multiprocess.cluster_from_arguments(None, None, None) is None
    with pytest.raises(ValueError, match="--time-budget 5.0"):
        multiprocess.check_run(multiprocess.Cluster(2, 0, "127.0.0.1:1"), None, 5.0)
    with pytest.raises(ValueError, match="--devices 2"):
        multiprocess.check_run(multiprocess.Cluster(2, 0, "127.0.0.1:1"), 2, None)
    with pytest.raises(ValueError, match="--peer-timeout must be positive"):
        multiprocess.Cluster(2, 0, "127.0.0.1:1", peer_timeout=0)


def test_an_unreachable_or_busy_coordinator_is_named():
    port = free_port()
    waiting = multiprocess.Cluster(2, 1, f"127.0.0.1:{port}", peer_timeout=1)
    with pytest.raises(ValueError, match=f"--coordinator '127.0.0.1:{port}': nothing answered"):
        multiprocess.check_coordinator(waiting)
    with pytest.raises(ValueError, match="unknown host 'no-such-host.invalid'"):
        multiprocess.check_coordinator(multiprocess.Cluster(2, 1, "no-such-host.invalid:1234"))
    with socket.socket() as busy:
        busy.bind(("", port))
        busy.listen()
        with pytest.raises(ValueError, match=f"process 0 cannot listen on port {port}"):
            multiprocess.check_coordinator(multiprocess.Cluster(2, 0, f"127.0.0.1:{port}"))
        multiprocess.check_coordinator(waiting)  # someone answers now


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_corpus(directory):
    with open(directory / "train.tsv", "w", encoding="utf-8") as file:
        file.writelines(f"{s}\t{t}\n" for s, t in kt.data.number_words("train", size=150))
    with open(directory / "valid.tsv", "w", encoding="utf-8") as file:
        file.writelines(f"{s}\t{t}\n" for s, t in kt.data.number_words("valid", size=5))


def train_flags(directory, work, steps):
    return ["train", "--tsv", str(directory / "train.tsv"), "--workdir", str(work),
            "--preset", "tiny", "--vocab-size", "100", "--set", "model.num_layers=1",
            "--set", "model.max_length=16", "--set", "max_tokens=64", "--set", "dropout=0.0",
            "--set", "warmup_steps=10", "--checkpoint-every", "1", "--log-every", "1",
            "--max-steps", str(steps)]  # fmt: skip


def start(flags, extra_env=None):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "keras_transformer", *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(process, timeout=TIMEOUT):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"a process ran past {timeout} s:\n{output[-3000:]}")
    return process.returncode, output


def cluster(rank, port, timeout=60):
    return ["--num-processes", "2", "--process-id", str(rank),
            "--coordinator", f"127.0.0.1:{port}", "--peer-timeout", str(timeout)]  # fmt: skip


def step_losses(work):
    with open(work / "logs" / "steps.csv", encoding="utf-8") as file:
        return [float(row["loss"]) for row in csv.DictReader(file)]


# Run in a fresh JAX process with 2 virtual CPU devices: the one-process reference
# (`--devices 2`: the same global batches), then the 2-process run's checkpoints
# resumed on 1 device and averaged, then both runs' weights compared.
REFERENCE = """
import sys, keras, numpy as np
from keras_transformer import cli, workdir
from keras_transformer.callbacks import optimizer_step
reference, distributed, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
assert cli.main([*flags, "--workdir", reference, "--devices", "2"]) == 0
one, two = (keras.saving.load_model(f"{d}/model.keras", compile=False)
            for d in (reference, distributed))
for a, b in zip(one.get_weights(), two.get_weights(), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
flags[flags.index("--max-steps") + 1] = "4"
assert cli.main([*flags, "--workdir", distributed, "--devices", "1"]) == 0
assert [s for s, _ in workdir.checkpoints(distributed)][-1] == 4
assert cli.main(["average", "--workdir", distributed, "--last", "2"]) == 0
"""


@runs_once
def test_two_jax_processes_train_like_one_resume_either_way_and_stop_when_one_dies(tmp_path):
    # One test, to start as few JAX processes as it can: 2 + 1 + 2.
    write_corpus(tmp_path)
    work = tmp_path / "two"
    port = free_port()
    flags = train_flags(tmp_path, work, steps=3)
    chief, other = (start([*flags, "--valid-tsv", str(tmp_path / "valid.tsv"),
                           *cluster(rank, port)]) for rank in (0, 1))  # fmt: skip
    (status_0, output_0), (status_1, output_1) = finish(chief), finish(other)
    assert status_0 == 0 and status_1 == 0, output_0[-3000:] + output_1[-3000:]
    assert "Wrote" in output_0 and "Wrote" not in output_1
    assert sorted(os.listdir(work / "checkpoints")) == [f"ckpt-{s}.weights.h5" for s in (1, 2, 3)]
    history = workdir.read_history(str(work / "logs" / "history.csv"))
    assert history[-1]["val_loss"] is not None and history[-1]["val_bleu"] is not None, history
    losses = step_losses(work)

    # One process on 2 virtual devices: the same global batches.
    reference = tmp_path / "one"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    reference_flags = [a for a in flags if a != str(work)]
    reference_flags.remove("--workdir")
    process = subprocess.Popen(
        [sys.executable, "-c", REFERENCE, str(reference), str(work), *reference_flags],
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    status, output = finish(process)
    assert status == 0, output[-3000:]
    assert len(losses) == 3
    np.testing.assert_allclose(losses, step_losses(reference), rtol=0, atol=1e-5)

    # The one-process run's checkpoint resumes in two processes; then one dies.
    flags = train_flags(tmp_path, reference, steps=100_000)
    port = free_port()
    chief, other = (start([*flags, *cluster(rank, port, timeout=10)]) for rank in (0, 1))
    began, lines = time.monotonic(), []
    for line in chief.stdout:  # until they have trained two steps together
        lines.append(line)
        if line.startswith("step 5") or time.monotonic() - began > TIMEOUT:
            break
    shown = "".join(lines)[-3000:]
    assert any(line.startswith("step 5") for line in lines), shown
    assert any(line.startswith("Resuming from") and "(step 3)" in line for line in lines), shown
    other.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    status, output = finish(chief, timeout=60)
    assert status != 0
    assert time.monotonic() - killed < 60
    assert "error" in output.lower(), output[-3000:]
    other.wait(timeout=10)
