"""Ask a running TF Serving model server for translations, over REST or gRPC.

Start the server on an export (see the README, "Serving"):

    docker run -p 8501:8501 -p 8500:8500 \
        -v "$PWD/saved_models/number-words-en-de:/models/number-words-en-de" \
        -e MODEL_NAME=number-words-en-de tensorflow/serving

then:

    python examples/tf_serving_client.py "twenty-one" "three hundred and five"
    python examples/tf_serving_client.py --grpc localhost:8500 "twenty-one"

REST needs `requests`; gRPC needs `tensorflow-serving-api` (pip install
tensorflow-serving-api). Neither is a dependency of keras-transformer.
"""

import argparse
import json


def translate_rest(url, model, texts):
    """POST {"inputs": {"text": [...]}} to the predict endpoint (columnar format)."""
    import requests

    response = requests.post(
        f"{url}/v1/models/{model}:predict", json={"inputs": {"text": texts}}, timeout=60
    )
    response.raise_for_status()
    outputs = response.json()["outputs"]
    # {"outputs": {"translation": [...], "score": [...]}}
    return list(zip(outputs["translation"], outputs["score"], strict=True))


def translate_grpc(address, model, texts):
    """The PredictionService's Predict call on the `serving_default` signature."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    response = stub.Predict(request, timeout=60.0)
    translations = tf.make_ndarray(response.outputs["translation"])
    scores = tf.make_ndarray(response.outputs["score"])
    return [(t.decode("utf-8"), float(s)) for t, s in zip(translations, scores, strict=True)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--model", default="number-words-en-de")
    parser.add_argument("--rest", default="http://localhost:8501", help="REST base URL")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="use gRPC instead of REST")
    args = parser.parse_args()
    if args.grpc:
        results = translate_grpc(args.grpc, args.model, args.texts)
    else:
        results = translate_rest(args.rest, args.model, args.texts)
    for text, (translation, score) in zip(args.texts, results, strict=True):
        print(json.dumps({"text": text, "translation": translation, "score": round(score, 4)}))


if __name__ == "__main__":
    main()
