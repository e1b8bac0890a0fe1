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
from helpers import runs_once, to_numpy, train_briefly

import keras_transformer as kt
from keras_transformer import export as export_module
from keras_transformer import serving, warmup
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


# The default (portable) graph, and `--jit-compile`. A model trained on JAX or
# PyTorch reaches either through the same .keras file: its passes check one.
EXPORTS = ["exported", pytest.param("exported_xla", marks=in_tensorflow_pass)]


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


@in_tensorflow_pass  # other backends export through the same .keras file, which keeps the policy
def test_a_mixed_bfloat16_model_exports_and_serves_as_it_translates(
    translator, corpus, tmp_path_factory
):
    # The trained weights under the `mixed_bfloat16` policy: float32 variables,
    # bfloat16 compute. The export keeps the policy: the graph computes in bfloat16.
    mixed = kt.build_transformer(translator.model.config, dtype="mixed_bfloat16")
    mixed.set_weights(translator.model.get_weights())
    mixed_translator = kt.Translator(
        mixed, translator.tokenizer, beam_size=4, length_penalty=0.6, max_extra_length=8
    )
    version_dir = kt.export_saved_model(
        mixed_translator, str(tmp_path_factory.mktemp("saved_models") / "mixed")
    )
    sources = [source for source, _ in corpus[:16]]
    [(translations, scores)] = run_in_session(version_dir, [sources], cwd=str(version_dir))
    expected, expected_scores = mixed_translator.translate(sources, return_scores=True)
    assert translations == expected
    assert sum(bool(text) for text in translations) >= 8
    # bfloat16 keeps 8 bits of mantissa; XLA in process and the graph round at
    # different points (measured up to 0.035 on scores near -15).
    np.testing.assert_allclose(scores, expected_scores, atol=0.1)
    assert "MatMul" in ops_computing_in(version_dir, "DT_BFLOAT16")


def ops_computing_in(version_dir, dtype):
    """The op types in the export's graph functions whose `T` is `dtype` (a DataType name)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as file:
        saved_model.ParseFromString(file.read())
    wanted = types_pb2.DataType.Value(dtype)
    library = saved_model.meta_graphs[0].graph_def.library
    return {
        node.op
        for function in library.function
        for node in function.node_def
        if "T" in node.attr and node.attr["T"].type == wanted
    }


@in_tensorflow_pass
def test_export_check_runs_in_a_session(exported):
    lines = serving.check_export(exported, ["one", ""])
    assert len(lines) == 2 and lines[1].startswith("  '' -> '' (score 0.0000)")


@runs_once
def test_the_export_check_imports_what_the_model_server_has_and_no_more():
    # (`import tensorflow` itself loads `keras`, the Python package; no graph op comes from it.)
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in ('keras_hub', 'keras_transformer') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, serving.SESSION_CHECK],
        capture_output=True, text=True, env=QUIET, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "[]"


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
    """The C program with `lines` (str or bytes) on stdin: (returncode, stdout, stderr)."""
    stdin = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    result = subprocess.run(
        [*command, *args], input=stdin, capture_output=True, env=QUIET, timeout=300
    )
    stdout, stderr = (
        out.decode("utf-8", "surrogateescape") for out in (result.stdout, result.stderr)
    )
    if check:
        assert result.returncode == 0, stderr[-4000:]
    return result.returncode, stdout, stderr


def answer_rows(stdout):
    return [line.split("\t") for line in stdout.split("\n")[:-1]]  # not splitlines: any text


def parse_answers(stdout):
    rows = answer_rows(stdout)
    return [row[-2] for row in rows], [float(row[-1]) for row in rows]


@in_tensorflow_pass
@pytest.mark.parametrize("export", EXPORTS)
def test_c_runtime_translates_as_the_translator(export, c_translate, translator, corpus, request):
    sources = [source for source, _ in corpus[:6]]
    texts = sources + edge_cases(sources) + ["zwei " * 2000]  # 10,000 characters
    # Requests of 4, 4, 4 and 2 sentences on one session, one of them with invalid UTF-8.
    lines = [*texts, b"\xff\xfe ein \xc3", sources[0]]
    _, stdout, _ = run_c(c_translate, request.getfixturevalue(export), "--batch", "4", lines=lines)
    translations, scores = parse_answers(stdout)
    expected, expected_scores = translator.translate(texts, return_scores=True)
    assert translations[: len(texts)] == expected
    np.testing.assert_allclose(scores[: len(texts)], expected_scores, atol=1e-4)
    assert sum(bool(text) for text in translations[:6]) >= 3
    assert translations[6:8] == ["", ""] and scores[6:8] == [0.0, 0.0]
    # Invalid UTF-8 gets an answer, and the sentence beside it the usual one.
    assert np.isfinite(scores[-2])
    assert translations[-1] == expected[0] and scores[-1] == pytest.approx(scores[0], abs=1e-4)


@in_tensorflow_pass
def test_c_runtime_one_session_from_eight_threads(c_translate, exported_xla, corpus):
    texts = [source for source, _ in corpus[:3]] + [""]
    single = parse_answers(run_c(c_translate, exported_xla, "--batch", "1", *texts)[1])
    _, stdout, _ = run_c(c_translate, exported_xla, "--threads", "8", "--requests", "50", *texts)
    rows = answer_rows(stdout)
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
    returncode, _, stderr = run_c(c_translate[:1], exported, "one", check=False)
    assert returncode == 2 and "Op type not registered 'SentencepieceOp'" in stderr
    returncode, _, stderr = run_c(c_translate, exported, "--signature", "translate", check=False)
    assert returncode == 2 and 'the export has no signature "translate"' in stderr


def pad_to(ids, width):
    return np.pad(ids, [(0, 0), (0, width - ids.shape[1])], constant_values=kt.PAD_ID)


CLIENT = os.path.join(HERE, "..", "examples", "tf_serving_client.py")


@pytest.fixture(scope="module")
def standin_server(exported, tmp_path_factory):
    """`tests/serving_standin.py` serving the export's base path as "numbers": its ports."""
    pytest.importorskip("tensorflow_serving.apis", reason="the dev extra tensorflow-serving-api")
    tmp_path = tmp_path_factory.mktemp("standin")
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
def test_bad_requests_get_an_error_and_the_server_stays_up(translator, standin_server):
    requests = pytest.importorskip("requests", reason="the dev extra requests")
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    long_text = "zwei " * 2000  # 10,000 characters
    expected, _ = translator.translate(["one", long_text], return_scores=True)
    url = f"http://localhost:{standin_server['rest']}/v1/models/numbers:predict"

    def rest(body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = requests.post(url, data=data, timeout=300)
        return response.status_code, response.json()

    assert rest({"instances": []}) == (200, {"predictions": []})
    status, answer = rest({"instances": [long_text]})
    assert status == 200 and answer["predictions"][0]["translation"] == expected[1]
    for body in (
        {"instances": [1, 2]},  # a wrong dtype
        {"inputs": {"txt": ["one"]}},  # a missing input name
        {"signature_name": "nope", "instances": ["one"]},
        b"not json",
    ):
        status, answer = rest(body)
        assert status == 400 and answer["error"], body
    assert rest({"instances": ["one"]})[1]["predictions"][0]["translation"] == expected[0]

    channel = grpc.insecure_channel(f"localhost:{standin_server['grpc']}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def predict(signature_name="serving_default", **inputs):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "numbers"
        request.model_spec.signature_name = signature_name
        for name, (value, dtype) in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
        response = stub.Predict(request, timeout=300)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    assert predict(text=([], tf.string))["translation"].shape == (0,)
    outputs = predict(text=([b"\xff\xfe ein \xc3", b"one"], tf.string))  # invalid UTF-8
    assert np.all(np.isfinite(outputs["score"]))
    assert outputs["translation"][1].decode() == expected[0]
    for signature_name, inputs in (
        ("serving_default", {"text": ([1, 2], tf.int32)}),
        ("serving_default", {"txt": (["one"], tf.string)}),
        ("nope", {"text": (["one"], tf.string)}),
    ):
        with pytest.raises(grpc.RpcError) as error:
            predict(signature_name, **inputs)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (signature_name, inputs)
    assert predict(text=(["one"], tf.string))["translation"][0].decode() == expected[0]
    channel.close()


@in_tensorflow_pass
@pytest.mark.parametrize("export", EXPORTS)
def test_warmup_requests_match_the_signature(export, translator, standin_server, request):
    prediction_log_pb2 = pytest.importorskip(
        "tensorflow_serving.apis.prediction_log_pb2", reason="the dev extra tensorflow-serving-api"
    )
    import tensorflow as tf

    path = os.path.join(
        request.getfixturevalue(export), "assets.extra", "tf_serving_warmup_requests"
    )
    shapes = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        assert log.WhichOneof("log_type") == "predict_log"
        spec, inputs = log.predict_log.request.model_spec, log.predict_log.request.inputs
        assert spec.signature_name == "serving_default" and list(inputs) == ["text"]
        texts = tf.make_ndarray(inputs["text"])
        assert inputs["text"].dtype == tf.string.as_datatype_enum and texts.ndim == 1
        assert len(set(texts)) == 1
        shapes.append((len(texts), len(translator.tokenizer.encode(texts[0].decode()))))
    # Every source length bucket of a max_length=32 model, filled to its end.
    batch_sizes = [1, 8, 64] if export == "exported_xla" else [1]
    assert shapes == [(rows, length) for length in (8, 16, 24, 32) for rows in batch_sizes]
    if export == "exported":
        assert standin_server["warmup"] == len(shapes)  # replayed at load, as the server does


@runs_once
def test_the_model_config_example_is_a_model_server_config():
    model_server_config_pb2 = pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2",
        reason="the dev extra tensorflow-serving-api",
    )
    from google.protobuf import text_format

    with open(os.path.join(REPOSITORY, "saved_models", "README.md"), encoding="utf-8") as file:
        blocks = file.read().split("```")[1::2]
    (example,) = [block for block in blocks if "model_config_list" in block]
    config = text_format.Parse(example, model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert list(model.model_version_policy.specific.versions) == [1, 2]
    assert dict(model.version_labels) == {"stable": 1, "canary": 2}


def batching_parameters_class():
    """TF Serving's `BatchingParameters` message (session_bundle_config.proto), declared here.

    `tensorflow-serving-api` does not ship that proto, so its fields (names,
    numbers and types as TF Serving declares them) are declared here to parse
    the README's batching file with protobuf's own text-format parser.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(
        name="batching_parameters.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )  # fmt: skip
    message = file.message_type.add(name="BatchingParameters")
    types = descriptor_pb2.FieldDescriptorProto
    int64, string = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    fields = [  # name, number, type, message type
        ("max_batch_size", 1, types.TYPE_MESSAGE, int64),
        ("batch_timeout_micros", 2, types.TYPE_MESSAGE, int64),
        ("max_enqueued_batches", 3, types.TYPE_MESSAGE, int64),
        ("num_batch_threads", 4, types.TYPE_MESSAGE, int64),
        ("thread_pool_name", 5, types.TYPE_MESSAGE, string),
        ("allowed_batch_sizes", 6, types.TYPE_INT64, None),
        ("pad_variable_length_inputs", 7, types.TYPE_BOOL, None),
    ]
    for name, number, kind, type_name in fields:
        label = types.LABEL_REPEATED if name == "allowed_batch_sizes" else types.LABEL_OPTIONAL
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


@runs_once
def test_the_batching_example_is_batching_parameters_the_export_pads_to():
    from google.protobuf import text_format

    with open(os.path.join(REPOSITORY, "saved_models", "README.md"), encoding="utf-8") as file:
        blocks = file.read().split("```")[1::2]
    (example,) = [block for block in blocks if "allowed_batch_sizes" in block]
    parameters = text_format.Parse(example, batching_parameters_class()())
    sizes = list(parameters.allowed_batch_sizes)
    # TF Serving's rules: increasing, the last equal to max_batch_size.
    assert sizes == sorted(set(sizes)) and sizes[-1] == parameters.max_batch_size.value
    # The export pads batches to powers of two: allowed sizes that are powers add no padding.
    assert all(size & (size - 1) == 0 for size in sizes)
    assert parameters.max_batch_size.value == max(warmup.WARMUP_BATCH_SIZES)
    assert parameters.num_batch_threads.value >= 1


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
    with pytest.raises(FileNotFoundError, match="No export directory at"):
        kt.load_translator(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        kt.load_translator(str(tmp_path))
