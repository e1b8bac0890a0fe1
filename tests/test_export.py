"""The TF Serving SavedModel: exported, then run as TF Serving runs it.

TF Serving loads an export with TensorFlow's session-based loader (a session
over the MetaGraph tagged `serve`, the signature's tensors run by name), so
that is the reference here: in a Python process that has TensorFlow and
TensorFlow Text only (`session_runner.py`, which `serving_standin.py` also
serves through), and in TensorFlow's C runtime with no Python at all
(`serving/translate.c`).

Under the JAX and PyTorch backends the export goes through the `.keras` file
in a TensorFlow subprocess, so the session tests are also the "trained on
another backend" tests. Tests of what the export does once written (the C
runtime, the REST/gRPC stand-in, `saved_model_cli`) do not depend on the
training backend: they run in the TensorFlow pass, where exporting is quickest.
"""

import json
import os
import select
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import to_numpy, train_briefly

import keras_transformer as kt
from keras_transformer import export as export_module
from keras_transformer import serving
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(HERE)
SESSION_RUNNER = os.path.join(HERE, "session_runner.py")
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

in_tensorflow_pass = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="does not depend on the training backend; runs in the TensorFlow pass",
)


@pytest.fixture(scope="module")
def corpus():
    return kt.data.number_words("train", "de", size=300, seed=3)


@pytest.fixture(scope="module")
def translator(corpus):
    keras.utils.set_random_seed(7)
    tokenizer = kt.Tokenizer.train([text for pair in corpus for text in pair], vocab_size=100)
    config = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, max_length=32)
    # Ten steps at a rate so small that no backend's model learns "EOS at once"
    # yet (at 0.02 the JAX one did): its translations are worth comparing.
    model = train_briefly(
        kt.build_transformer(config), corpus, tokenizer, steps=10, learning_rate_scale=0.0005
    )
    return kt.Translator(model, tokenizer, beam_size=4, length_penalty=0.6, max_extra_length=8)


@pytest.fixture(scope="module")
def exported(translator, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models") / "numbers"
    return kt.export_saved_model(translator, str(base))


@pytest.fixture(scope="module")
def exported_xla(translator, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models") / "numbers-xla"
    return kt.export_saved_model(translator, str(base), jit_compile=True)


EXPORTS = ["exported", "exported_xla"]  # the default (portable) graph, and `--jit-compile`


def edge_cases(sources):
    return [
        "",
        "    ",
        "zweihundert ünd dreißig — 日本語 ☃",
        " ".join(sources * 20),  # far longer than max_length=32
        sources[5],
    ]


def run_in_session(version_dir, batches, cwd):
    """`serving_default` on each batch in a fresh TF-Serving-like process: [(texts, scores)]."""
    result = subprocess.run(
        [sys.executable, SESSION_RUNNER, version_dir],
        input=json.dumps(batches),
        capture_output=True,
        text=True,
        cwd=cwd,  # not the repository: the project is not importable there
        env=QUIET,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("export", EXPORTS)
def test_tf_serving_session_translates_as_the_translator(
    export, translator, corpus, tmp_path, request
):
    sources = [source for source, _ in corpus[:6]]
    batches = [sources[:1], sources[1:6], edge_cases(sources)]
    served = run_in_session(request.getfixturevalue(export), batches, cwd=str(tmp_path))
    for batch, (translations, scores) in zip(batches, served, strict=True):
        expected, expected_scores = translator.translate(batch, return_scores=True)
        assert translations == expected
        np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    # Barely trained: the translations are not all empty, so equality means something.
    assert sum(bool(text) for text in served[1][0]) >= 3
    translations, scores = served[2]
    assert translations[:2] == ["", ""] and scores[:2] == [0.0, 0.0]
    assert all(np.isfinite(scores))


@in_tensorflow_pass
def test_export_check_runs_in_a_session(exported):
    lines = serving.check_export(exported, ["one", ""])
    assert len(lines) == 2 and lines[1].startswith("  '' -> '' (score 0.0000)")


# --- TensorFlow's C runtime: serving/translate.c --------------------------------------------


@pytest.fixture(scope="module")
def c_translate(tmp_path_factory):
    """`serving/translate.c` compiled against the installed tensorflow wheel: its command prefix."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (gcc or cc) on PATH to build serving/translate.c")
    import tensorflow as tf
    import tensorflow_text

    tf_dir = os.path.dirname(tf.__file__)
    binary = str(tmp_path_factory.mktemp("c") / "translate")
    result = subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", "-std=c11", "-pthread",
         f"-I{tf_dir}/include", os.path.join(REPOSITORY, "serving", "translate.c"),
         "-o", binary, f"{tf_dir}/libtensorflow_cc.so.2", f"{tf_dir}/libtensorflow_framework.so.2",
         f"-Wl,-rpath,{tf_dir}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    # TensorFlow Text's kernels, which TF Serving links into the model server.
    ops = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    libraries = sorted(name for name in os.listdir(ops) if name.endswith(".so"))
    assert "_sentencepiece_tokenizer.so" in libraries
    return [binary, *(arg for name in libraries for arg in ("--library", os.path.join(ops, name)))]


def run_c(command, *args, lines=(), check=True):
    result = subprocess.run(
        [*command, *args],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True, text=True, env=QUIET, timeout=300,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def answer_rows(stdout):
    return [line.split("\t") for line in stdout.split("\n")[:-1]]  # not splitlines: any text


def parse_answers(stdout):
    rows = answer_rows(stdout)
    return [row[-2] for row in rows], [float(row[-1]) for row in rows]


@in_tensorflow_pass
@pytest.mark.parametrize("export", EXPORTS)
def test_c_runtime_translates_as_the_translator(export, c_translate, translator, corpus, request):
    sources = [source for source, _ in corpus[:6]]
    texts = sources + edge_cases(sources)
    # Requests of 4, 4 and 3 sentences on one session.
    result = run_c(c_translate, request.getfixturevalue(export), "--batch", "4", lines=texts)
    translations, scores = parse_answers(result.stdout)
    expected, expected_scores = translator.translate(texts, return_scores=True)
    assert translations == expected
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    assert sum(bool(text) for text in translations[:6]) >= 3
    assert translations[6:8] == ["", ""] and scores[6:8] == [0.0, 0.0]


@in_tensorflow_pass
def test_c_runtime_one_session_from_eight_threads(c_translate, exported_xla, corpus):
    texts = [source for source, _ in corpus[:3]] + [""]
    single = parse_answers(run_c(c_translate, exported_xla, "--batch", "1", *texts).stdout)
    result = run_c(c_translate, exported_xla, "--threads", "8", "--requests", "50", *texts)
    rows = answer_rows(result.stdout)
    assert sorted((int(row[0]), int(row[1])) for row in rows) == [
        (thread, request) for thread in range(8) for request in range(50)
    ]
    for thread, request_index, sentence, translation, score in rows:
        assert int(sentence) == (int(thread) + int(request_index)) % len(texts)
        assert translation == single[0][int(sentence)]
        assert float(score) == single[1][int(sentence)]


@in_tensorflow_pass
def test_c_runtime_needs_the_tensorflow_text_kernels(c_translate, exported):
    # What a model server without TensorFlow Text's ops would say.
    result = run_c(c_translate[:1], exported, "one", check=False)
    assert result.returncode == 2
    assert "Op type not registered 'SentencepieceOp'" in result.stderr
    result = run_c(c_translate, exported, "--signature", "translate", "one", check=False)
    assert result.returncode == 2
    assert 'the export has no signature "translate"' in result.stderr


def pad_to(ids, width):
    return np.pad(ids, [(0, 0), (0, width - ids.shape[1])], constant_values=kt.PAD_ID)


CLIENT = os.path.join(HERE, "..", "examples", "tf_serving_client.py")


@pytest.fixture
def standin_server(exported, tmp_path):
    """`tests/serving_standin.py` serving the export's base path as "numbers": its ports."""
    pytest.importorskip("tensorflow_serving.apis", reason="the dev extra tensorflow-serving-api")
    log_path = tmp_path / "standin.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "serving_standin.py"), "numbers",
             os.path.dirname(exported)],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=str(tmp_path),
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
    try:
        ready, _, _ = select.select([server.stdout], [], [], 300)
        line = server.stdout.readline() if ready else ""
        if not line:
            server.kill()
            server.wait()
            pytest.fail(f"the stand-in server did not start: {log_path.read_text()[-3000:]}")
        yield json.loads(line)
    finally:
        server.kill()
        server.wait()


@in_tensorflow_pass
def test_serving_client_over_rest_and_grpc(translator, standin_server, corpus):
    texts = [source for source, _ in corpus[:3]] + [""]
    expected, expected_scores = translator.translate(texts, return_scores=True)
    assert sum(bool(text) for text in expected) >= 2
    transports = {
        "rest": ["--rest", f"http://localhost:{standin_server['rest']}"],
        "grpc": ["--grpc", f"localhost:{standin_server['grpc']}"],
    }
    for name, transport in transports.items():
        result = subprocess.run(
            [sys.executable, CLIENT, "--model", "numbers", *transport, *texts],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        assert result.returncode == 0, (name, result.stderr[-3000:])
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row["text"] for row in rows] == texts, name
        assert [row["translation"] for row in rows] == expected, name
        np.testing.assert_allclose([row["score"] for row in rows], expected_scores, atol=1e-3)

    # The README's row-format request and its answer.
    requests = pytest.importorskip("requests", reason="the dev extra requests")
    url = f"http://localhost:{standin_server['rest']}/v1/models/numbers:predict"
    predictions = requests.post(url, json={"instances": texts[:2]}, timeout=300).json()
    assert [row["translation"] for row in predictions["predictions"]] == expected[:2]
    np.testing.assert_allclose(
        [row["score"] for row in predictions["predictions"]], expected_scores[:2], atol=1e-4
    )


@in_tensorflow_pass
def test_saved_model_cli_lists_the_serving_signature(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "show", "--dir", exported, "--tag_set", "serve", "--signature_def",
         "serving_default"],
        capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.strip() for line in result.stdout.splitlines()]

    def tensor(kind, name):
        at = lines.index(f"{kind}['{name}'] tensor_info:")
        return lines[at + 1], lines[at + 2]

    assert [line for line in lines if line.startswith(("inputs[", "outputs["))] == [
        "inputs['text'] tensor_info:",
        "outputs['score'] tensor_info:",
        "outputs['translation'] tensor_info:",
    ]
    assert tensor("inputs", "text") == ("dtype: DT_STRING", "shape: (-1)")
    assert tensor("outputs", "translation") == ("dtype: DT_STRING", "shape: (-1)")
    assert tensor("outputs", "score") == ("dtype: DT_FLOAT", "shape: (-1)")


def test_load_translator_ids_and_logits_endpoints(translator, exported, corpus):
    loaded = kt.load_translator(os.path.dirname(exported))  # the base path: latest version
    assert loaded.path == exported
    assert loaded.tokenizer.proto == translator.tokenizer.proto  # the asset travelled

    source = np.zeros((3, 12), "int32")
    for row, ids in enumerate(translator.encode([s for s, _ in corpus[:3]])):
        source[row, : len(ids)] = ids
    sequences, scores = loaded.translate_ids(source)
    expected, expected_scores = translator.translate_ids(source)
    # Both end in EOS then PAD; the SavedModel pads the source to a bucket first.
    width = max(sequences.shape[1], expected.shape[2])
    np.testing.assert_array_equal(pad_to(sequences, width), pad_to(expected[:, 0], width))
    np.testing.assert_allclose(scores, expected_scores[:, 0], atol=1e-4)

    target = np.concatenate([np.full((3, 1), kt.BOS_ID, "int32"), source[:, :-1]], axis=1)
    logits = loaded.logits(source, target)
    model_logits = translator.model({ENCODER_INPUT: source, DECODER_INPUT: target})
    np.testing.assert_allclose(logits, to_numpy(model_logits), atol=1e-4)


def test_versions_are_never_overwritten(translator, exported):
    base = os.path.dirname(exported)
    before = open(os.path.join(exported, "saved_model.pb"), "rb").read()
    with pytest.raises(FileExistsError, match=r"1 exists; TF Serving versions are never"):
        kt.export_saved_model(translator, base, version=1)
    assert open(os.path.join(exported, "saved_model.pb"), "rb").read() == before
    with pytest.raises(ValueError, match="version must be a positive integer"):
        kt.export_saved_model(translator, base, version=0)


def test_a_failed_export_leaves_no_version_behind(translator, exported, monkeypatch):
    base = os.path.dirname(exported)

    def crash(*args):
        out = [arg for arg in args if isinstance(arg, str)][-1]
        os.makedirs(os.path.join(out, "variables"))
        open(os.path.join(out, "saved_model.pb"), "wb").write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "_write_saved_model", crash)
    monkeypatch.setattr(export_module, "_export_files", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        kt.export_saved_model(translator, base)
    assert sorted(os.listdir(base)) == ["1"]  # no "2", no temporary directory


def test_load_translator_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No SavedModel directory at"):
        kt.load_translator(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        kt.load_translator(str(tmp_path))
