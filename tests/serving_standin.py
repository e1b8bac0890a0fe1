"""A stand-in for `tensorflow_model_server`, to test the client against.

    python tests/serving_standin.py MODEL_NAME MODEL_BASE_PATH

Like the model server it imports TensorFlow and TensorFlow Text only (plus the
`tensorflow_serving.apis` protocol buffers and gRPC), loads the highest
version under `MODEL_BASE_PATH` in a session with the `serve` tag, as the
server does (`session_runner.SessionModel`), and answers

- REST `POST /v1/models/MODEL_NAME[/versions/N]:predict` in the row format
  (`{"instances": [...]}` -> `{"predictions": [...]}`, one object per row
  when the signature has several outputs) and the columnar format
  (`{"inputs": ...}` -> `{"outputs": ...}`), errors as `{"error": "..."}`;
- gRPC `tensorflow.serving.PredictionService/Predict`.

Before it listens it replays the export's warmup requests
(`assets.extra/tf_serving_warmup_requests`), as the server does at load
time. It prints one JSON line `{"rest": PORT, "grpc": PORT, "warmup":
REQUESTS_REPLAYED}` when both listen.
This follows TF Serving's documented protocols; it is not the server, and
only the tests use it.
"""

import json
import os
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from session_runner import SessionModel  # also forbids Keras and the project from here on
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc


def latest_version(base_path):
    versions = [int(name) for name in os.listdir(base_path) if name.isdigit()]
    if not versions:
        raise SystemExit(f"no numbered version under {base_path}")
    return max(versions)


class Model:
    """The latest version, in one session that every request shares, as the server keeps it."""

    def __init__(self, name, base_path):
        self.name = name
        self.version = latest_version(base_path)
        self.session_model = SessionModel(os.path.join(base_path, str(self.version)))

    def named_inputs(self, signature_name, inputs):
        """A bare list or tensor names the signature's only input."""
        if isinstance(inputs, dict):
            return inputs
        (name,) = self.session_model.input_names(signature_name)
        return {name: inputs}

    def run(self, signature_name, inputs):
        """`inputs`: name -> array-like. Returns name -> numpy array."""
        return self.session_model.run(signature_name, inputs)


def replay_warmup(model, version_dir):
    """Runs `assets.extra/tf_serving_warmup_requests` as the server does at load; returns how many.

    A request that fails stops the load, as it does in the server.
    """
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    if not os.path.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        model.run(request.model_spec.signature_name, inputs)
        count += 1
    return count


def to_json(array):
    if array.dtype.kind in "SO":
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist()
    return array.tolist()


def rest_predict(model, body):
    """The predict API's JSON request body -> its JSON response."""
    signature = body.get("signature_name")
    if "instances" in body and "inputs" in body:
        raise ValueError('the body has both "instances" and "inputs"')
    if "instances" in body:
        instances = body["instances"]
        if instances and isinstance(instances[0], dict):
            inputs = {name: [row[name] for row in instances] for name in instances[0]}
        else:
            inputs = model.named_inputs(signature, instances)
    elif "inputs" in body:
        inputs = model.named_inputs(signature, body["inputs"])
    else:
        raise ValueError('the body has neither "instances" nor "inputs"')
    outputs = {name: to_json(value) for name, value in model.run(signature, inputs).items()}
    if "inputs" in body:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(rows)]}


def rest_handler(model):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            prefix = f"/v1/models/{model.name}"
            path = self.path
            if path.startswith(prefix + "/versions/"):
                version, _, method = path[len(prefix + "/versions/") :].partition(":")
                path = prefix + ":" + method if version == str(model.version) else ""
            if path != prefix + ":predict":
                return self.reply(404, {"error": f"no such model or method: {self.path}"})
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                return self.reply(200, rest_predict(model, body))
            except Exception as error:  # the server answers every bad request with its message
                return self.reply(400, {"error": f"{type(error).__name__}: {error}"})

        def reply(self, status, payload):
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model):
        self.model = model

    def Predict(self, request, context):
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_spec.name!r}")
        spec = request.model_spec
        if spec.HasField("version") and spec.version.value != self.model.version:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no version {spec.version.value}")
        try:
            inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            outputs = self.model.run(spec.signature_name, inputs)
        except Exception as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(error).__name__}: {error}")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def main():
    name, base_path = sys.argv[1:3]
    model = Model(name, base_path)
    warmup = replay_warmup(model, os.path.join(base_path, str(model.version)))
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(model), grpc_server
    )
    grpc_port = grpc_server.add_insecure_port("localhost:0")
    grpc_server.start()
    rest_server = ThreadingHTTPServer(("localhost", 0), rest_handler(model))
    threading.Thread(target=rest_server.serve_forever, daemon=True).start()
    ports = {"rest": rest_server.server_address[1], "grpc": grpc_port}
    print(json.dumps({**ports, "warmup": warmup}), flush=True)
    grpc_server.wait_for_termination()


if __name__ == "__main__":
    main()
