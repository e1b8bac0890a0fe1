"""Serving latency: the SavedModel in Python and in the C runtime vs the in-process Translator.

One model (the `small` preset, random weights, so every sentence decodes to
its full length limit and the work is the same for every peer), one tokenizer
(trained on the built-in number-words corpus), beam 4, alpha 0.6:

- in-process: `Translator.translate` under the TensorFlow backend (XLA);
- SavedModel: `export_saved_model(...)` loaded in a bare process that imports
  only tensorflow and tensorflow_text, as TF Serving runs it; once with the
  default portable graph and once with `jit_compile=True` (XLA in the graph,
  TF Serving flag `--xla_cpu_compilation_enabled=true`);
- C runtime: `serving/translate.c`, compiled with gcc against the tensorflow
  wheel exactly as tests/test_export.py compiles it, with TensorFlow Text's
  kernel libraries loaded by `--library`. `translate.c` prints no times and
  serves one batch per `TF_SessionRun`, so the script compiles it together
  with a small timing driver (written to the temp dir; it `#include`s
  translate.c and calls its own `load_model` and `translate`, the functions
  the program runs): each request is timed around `translate()` inside the
  process, start-up and loading apart. The driver also runs N client threads
  on the one session (as `translate --threads N` does, but with batches and
  timing), and can replay the export's `assets.extra/tf_serving_warmup_requests`
  before the first request (the records are read with the
  tensorflow-serving-api protos in Python and handed to the driver as text;
  translate.c itself does not replay them).

Latency per request of 1, 8 and 64 sentences (text in, text out, tokenization
included): p50 and p99 of `--repeats` calls after one first call per batch
size (reported apart: it holds compilation). The C runtime's first request is
measured in two fresh processes, with and without the warmup file replayed.
Throughput: `--client-requests` requests of each `--client-batches` size
(the latency loop's request of that size, compiled by then), by one client,
then split over 8 concurrent client threads: pthreads on one session in the C
runtime, Python threads on one `Translator` in process; throughput and
per-request p50/p99 for each.

    python benchmarks/serving_latency.py [--repeats 5] [--peers translator,saved-model,c]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import add_model_arguments, cpu_model, print_table, report, run_worker  # noqa: E402

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSLATOR = "in-process Translator (XLA)"

# The timing driver: translate.c's own functions, timed inside the process.
DRIVER = r"""
#define main translate_main
#include "translate.c"
#undef main
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int timed(const Model *model, char **texts, int count, double *seconds) {
  Answer *answers = calloc((size_t)count, sizeof(Answer));
  double began = now();
  int ok = translate(model, texts, count, answers);
  *seconds = now() - began;
  if (ok)
    for (int i = 0; i < count; i++) free(answers[i].translation);
  free(answers);
  return ok;
}

typedef struct {
  const Model *model;
  char **texts;
  int num_texts, batch, requests, thread, failures;
  double *seconds;
} Client;

static void *client(void *arg) {
  Client *c = arg;
  char **batch = calloc((size_t)c->batch, sizeof(char *));
  for (int i = 0; i < c->requests; i++) {
    /* The latency loop's request of this size: its shapes are compiled by then. */
    for (int j = 0; j < c->batch; j++) batch[j] = c->texts[j % c->num_texts];
    if (!timed(c->model, batch, c->batch, &c->seconds[i])) c->failures++;
  }
  free(batch);
  return NULL;
}

/* bench [--library L]... [--warmup FILE] [--batches 1,8,64] [--repeats R]
 *       [--clients 1,8 --client-batches 1,8,64 --client-requests R] EXPORT_DIR < sentences
 * Warmup FILE: one request a line, its sentences separated by \x1f. */
int main(int argc, char **argv) {
  const char *export_dir = NULL, *warmup = NULL, *batches = "1,8,64", *clients = "";
  const char *client_batches = "8";
  int repeats = 5, client_requests = 16, failures = 0;
  TF_Status *status = TF_NewStatus();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--library") == 0 && i + 1 < argc) {
      TF_LoadLibrary(argv[++i], status);
      if (TF_GetCode(status) != TF_OK) {
        fprintf(stderr, "error: %s\n", TF_Message(status));
        return 2;
      }
    } else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) warmup = argv[++i];
    else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc) batches = argv[++i];
    else if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc) repeats = atoi(argv[++i]);
    else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) clients = argv[++i];
    else if (strcmp(argv[i], "--client-batches") == 0 && i + 1 < argc)
      client_batches = argv[++i];
    else if (strcmp(argv[i], "--client-requests") == 0 && i + 1 < argc)
      client_requests = atoi(argv[++i]);
    else export_dir = argv[i];
  }
  if (!export_dir) return 2;
  int num_texts = 0;
  char **texts = read_lines(&num_texts);
  if (num_texts == 0) return 2;
  Model model;
  double began = now();
  if (!load_model(&model, export_dir, "serving_default")) return 2;
  printf("load %.6f\n", now() - began);
  if (warmup) {
    FILE *file = fopen(warmup, "r");
    char *line = NULL;
    size_t size = 0;
    ssize_t length;
    int records = 0;
    double total = 0, seconds;
    while (file && (length = getline(&line, &size, file)) > 0) {
      if (line[length - 1] == '\n') line[--length] = '\0';
      char *request[1024];
      int count = 0;
      for (char *part = strtok(line, "\x1f"); part && count < 1024; part = strtok(NULL, "\x1f"))
        request[count++] = part;
      if (!timed(&model, request, count, &seconds)) failures++;
      total += seconds;
      records++;
    }
    free(line);
    if (file) fclose(file);
    printf("warmup %d %.6f\n", records, total);
  }
  char *list = strdup(batches);
  for (char *item = strtok(list, ","); item; item = strtok(NULL, ",")) {
    int batch = atoi(item);
    char **request = calloc((size_t)batch, sizeof(char *));
    for (int j = 0; j < batch; j++) request[j] = texts[j % num_texts];
    double seconds;
    for (int r = 0; r <= repeats; r++) {
      if (!timed(&model, request, batch, &seconds)) failures++;
      printf("%s %d %.6f\n", r == 0 ? "first" : "latency", batch, seconds);
    }
    free(request);
  }
  free(list);
  int sizes[16], num_sizes = 0;
  list = strdup(client_batches);
  for (char *item = strtok(list, ","); item && num_sizes < 16; item = strtok(NULL, ","))
    sizes[num_sizes++] = atoi(item);
  free(list);
  list = strdup(clients);
  int settings[16], num_settings = 0;
  for (char *item = strtok(list, ","); item && num_settings < 16; item = strtok(NULL, ","))
    settings[num_settings++] = atoi(item);
  free(list);
  for (int k = 0; k < num_sizes * num_settings; k++) {
    int client_batch = sizes[k / num_settings], n = settings[k % num_settings];
    int each = client_requests / n;
    Client *workers = calloc((size_t)n, sizeof(Client));
    pthread_t *ids = calloc((size_t)n, sizeof(pthread_t));
    began = now();
    for (int t = 0; t < n; t++) {
      workers[t] = (Client){&model, texts, num_texts, client_batch, each, t, 0,
                            calloc((size_t)each, sizeof(double))};
      pthread_create(&ids[t], NULL, client, &workers[t]);
    }
    for (int t = 0; t < n; t++) pthread_join(ids[t], NULL);
    printf("clients %d %d %d %.6f\n", n, client_batch, n * each, now() - began);
    for (int t = 0; t < n; t++) {
      for (int i = 0; i < each; i++)
        printf("client_latency %d %d %.6f\n", n, client_batch, workers[t].seconds[i]);
      failures += workers[t].failures;
      free(workers[t].seconds);
    }
    free(workers);
    free(ids);
  }
  fflush(stdout);
  printf("failures %d\n", failures);
  return failures ? 1 : 0;
}
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batches", default="1,8,64", help="sentences per request")
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per batch size")
    parser.add_argument("--max-extra-length", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=128, help="the model's max_length")
    parser.add_argument(
        "--peers", default="translator,saved-model,c", help="which peers (the Translator always)"
    )
    parser.add_argument("--clients", default="1,8", help="concurrent clients on one model")
    parser.add_argument("--client-batches", default="1,8,64", help="sentences per client request")
    parser.add_argument(
        "--client-requests", type=int, default=16, help="requests per clients setting, split"
    )
    parser.add_argument("--worker", nargs=2, metavar=("ROLE", "DIR"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sentences(args):
    """The same sentences for every peer: a request of B sentences is the first B."""
    import keras_transformer as kt

    count = max(map(int, f"{args.batches},{args.client_batches}".split(",")))
    return [source for source, _ in kt.data.number_words("test", "de", size=count, seed=0)]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(first, times):
    return {
        "first": first,
        "p50": statistics.median(times),
        "p99": percentile(times, 99),
        "n": len(times),
    }


def latencies(translate, args):
    """{batch size: summary} for `translate(list[str])`."""
    results = {}
    texts = sentences(args)
    for size in map(int, args.batches.split(",")):
        request = [texts[i % len(texts)] for i in range(size)]
        began = time.perf_counter()
        translate(request)
        first = time.perf_counter() - began
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            translate(request)
            times.append(time.perf_counter() - began)
        results[str(size)] = summary(first, times)
    return results


def prepare_and_time_in_process(args, directory):
    """Builds the model, exports both SavedModels, times the in-process Translator."""
    import keras

    import keras_transformer as kt

    keras.utils.set_random_seed(0)
    pairs = kt.data.number_words("train", "de", size=5000, seed=0)
    tokenizer = kt.Tokenizer.train([t for pair in pairs for t in pair], vocab_size=args.vocab_size)
    config = kt.TransformerConfig.small(
        vocab_size=tokenizer.vocab_size,
        hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim,
        num_heads=args.num_heads,
        num_layers=args.num_layers,
        max_length=args.max_length,
    )
    model = kt.build_transformer(config)
    translator = kt.Translator(
        model, tokenizer, max_extra_length=args.max_extra_length, batch_size=args.batch_size
    )
    for jit_compile in (False, True):
        began = time.perf_counter()
        name = "xla" if jit_compile else "portable"
        kt.export_saved_model(translator, os.path.join(directory, name), jit_compile=jit_compile)
        print(f"exported {name} in {time.perf_counter() - began:.1f}s", file=sys.stderr)
    return {
        "batches": latencies(translator.translate, args),
        "clients": concurrent_clients(translator.translate, args),
    }


def time_saved_model(args, version_dir):
    """A bare process: tensorflow and tensorflow_text only."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    serve = tf.saved_model.load(version_dir).signatures["serving_default"]

    def translate(texts):
        outputs = serve(text=tf.constant(texts, dtype=tf.string))
        return [text.decode("utf-8") for text in outputs["translation"].numpy()]

    return latencies(translate, args)


def warmup_as_text(version_dir, out):
    """The export's warmup records, one request a line, sentences joined by \\x1f; or None."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    if not os.path.exists(path):
        return None
    lines = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        texts = tf.make_ndarray(log.predict_log.request.inputs["text"])
        lines.append("\x1f".join(text.decode("utf-8") for text in texts))
    with open(out, "w") as file:
        file.write("\n".join(lines) + "\n")
    return out


def compile_driver(directory):
    """translate.c plus the timing driver, built as tests/test_export.py builds translate.c."""
    import tensorflow as tf
    import tensorflow_text

    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH")
    tf_dir = os.path.dirname(tf.__file__)
    source, binary = os.path.join(directory, "bench.c"), os.path.join(directory, "bench")
    with open(source, "w") as file:
        file.write(DRIVER)
    result = subprocess.run(
        [compiler, "-O2", "-Wall", "-Werror", "-std=c11", "-pthread",
         f"-I{tf_dir}/include", f"-I{os.path.join(REPOSITORY, 'serving')}", source,
         "-o", binary, f"{tf_dir}/libtensorflow_cc.so.2", f"{tf_dir}/libtensorflow_framework.so.2",
         f"-Wl,-rpath,{tf_dir}"],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    ops = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    libraries = sorted(name for name in os.listdir(ops) if name.endswith(".so"))
    return [binary, *(arg for name in libraries for arg in ("--library", os.path.join(ops, name)))]


def run_driver(command, version_dir, texts, args, warmup=None, clients=""):
    options = ["--batches", args.batches, "--repeats", str(args.repeats), "--clients", clients]
    options += ["--client-batches", args.client_batches]
    options += ["--client-requests", str(args.client_requests)]
    if warmup:
        options += ["--warmup", warmup]
    result = subprocess.run(
        [*command, *options, version_dir],
        input="\n".join(texts) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=3600,
    )
    if result.returncode != 0:
        raise RuntimeError((result.stderr.strip().splitlines() or ["failed"])[-1][:300])
    parsed = {"batches": {}, "clients": []}
    client_times = {}
    for line in result.stdout.splitlines():
        kind, *values = line.split()
        if kind in ("load", "warmup"):
            parsed[kind] = float(values[-1])
        elif kind in ("first", "latency"):
            entry = parsed["batches"].setdefault(values[0], {"first": None, "times": []})
            if kind == "first":
                entry["first"] = float(values[1])
            else:
                entry["times"].append(float(values[1]))
        elif kind == "clients":
            n, batch, requests = (int(value) for value in values[:3])
            parsed["clients"].append({"clients": n, "batch": batch, "requests": requests,
                                      "wall": float(values[3])})  # fmt: skip
        elif kind == "client_latency":
            client_times.setdefault((int(values[0]), int(values[1])), []).append(float(values[2]))
    parsed["batches"] = {
        size: summary(entry["first"], entry["times"]) for size, entry in parsed["batches"].items()
    }
    for entry in parsed["clients"]:
        entry.update(client_summary(client_times[entry["clients"], entry["batch"]], entry))
    return parsed


def client_summary(times, entry):
    """Throughput and per-request p50/p99 of one clients setting."""
    return {
        "sentences_per_s": entry["requests"] * entry["batch"] / entry["wall"],
        "p50": statistics.median(times),
        "p99": percentile(times, 99),
    }


def concurrent_clients(translate, args):
    """`--clients` threads sharing `translate`, as the C driver's pthreads share one session."""
    from concurrent.futures import ThreadPoolExecutor

    texts = sentences(args)
    results = []
    for batch in map(int, args.client_batches.split(",")):
        for n in map(int, args.clients.split(",")):
            each = args.client_requests // n

            # The latency loop's request of this size, as in the C driver: compiled by then.
            request = [texts[j % len(texts)] for j in range(batch)]

            def client(thread, request=request, each=each):
                times = []
                for _ in range(each):
                    began = time.perf_counter()
                    translate(request)
                    times.append(time.perf_counter() - began)
                return times

            began = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                times = [t for thread in pool.map(client, range(n)) for t in thread]
            entry = {"clients": n, "batch": batch, "requests": n * each}
            entry["wall"] = time.perf_counter() - began
            results.append({**entry, **client_summary(times, entry)})
    return results


def time_c_runtime(args, directory):
    """Both exports in the C runtime: latencies with the warmup replayed, then a cold process."""
    command = compile_driver(directory)
    texts = sentences(args)
    results = {}
    for name in ("portable", "xla"):
        version_dir = os.path.join(directory, name, "1")
        warmup = warmup_as_text(version_dir, os.path.join(directory, f"warmup-{name}.txt"))
        warm = run_driver(command, version_dir, texts, args, warmup=warmup, clients=args.clients)
        cold = run_driver(command, version_dir, texts, args)
        warm["cold_first"] = {size: value["first"] for size, value in cold["batches"].items()}
        warm["cold_load"] = cold["load"]
        results[name] = warm
    return results


def worker(args):
    role, directory = args.worker
    if role == "in-process":
        report(prepare_and_time_in_process(args, directory))
    elif role == "saved-model":
        report(time_saved_model(args, directory))
    else:
        report(time_c_runtime(args, directory))


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    script = os.path.abspath(__file__)
    forwarded = sys.argv[1:]
    peers = set(args.peers.split(","))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores", flush=True)
    results, c_results = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        jobs = {TRANSLATOR: ("in-process", directory, "tensorflow")}
        if "saved-model" in peers:
            for name, label in (("portable", "SavedModel, portable"), ("xla", "SavedModel, XLA")):
                jobs[label] = ("saved-model", os.path.join(directory, name, "1"), None)
        for label, (role, path, backend) in jobs.items():
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results[label] = run_worker(script, [role, path, *forwarded], backend=backend)
        translator_clients = results[TRANSLATOR].pop("clients", [])
        if "batches" in results[TRANSLATOR]:
            results[TRANSLATOR] = results[TRANSLATOR]["batches"]
        if "c" in peers:
            print("running the C runtime ...", file=sys.stderr, flush=True)
            c_results = run_worker(script, ["c", directory, *forwarded])
    if "error" in c_results:
        results["C runtime"] = c_results
    else:
        for name, result in c_results.items():
            label = "XLA" if name == "xla" else "portable"
            results[f"C runtime, {label}"] = result["batches"]
    reference = results[TRANSLATOR]
    rows = []
    for label, result in results.items():
        if "error" in result:
            rows.append({"peer": label, "first": result["error"]})
            continue
        for size, value in result.items():
            base = reference.get(size) if "error" not in reference else None
            rows.append(
                {
                    "peer": label,
                    "batch": int(size),
                    "first": value["first"],
                    "p50": value["p50"] * 1000,
                    "p99": value["p99"] * 1000,
                    "n": value["n"],
                    "per_sentence": value["p50"] * 1000 / int(size),
                    "ratio": ratio(value["p50"], base["p50"]) if base else None,
                }
            )
    print_table(
        rows,
        [
            ("peer", "peer"),
            ("batch", "sentences"),
            ("first", "first call s"),
            ("p50", "p50 ms"),
            ("p99", "p99 ms"),
            ("n", "n"),
            ("per_sentence", "p50 ms/sentence"),
            ("ratio", "p50 x in-process"),
        ],
    )
    if c_results and "error" not in c_results:
        print()
        rows = []
        for name, result in c_results.items():
            for size, value in result["batches"].items():
                rows.append(
                    {
                        "export": name,
                        "batch": int(size),
                        "cold": result["cold_first"].get(size),
                        "warm_first": value["first"],
                        "p50": value["p50"],
                        "cold_ratio": ratio(result["cold_first"].get(size), value["p50"]),
                        "warm_ratio": ratio(value["first"], value["p50"]),
                        "replay": result.get("warmup"),
                    }
                )
        print("C runtime, first request in a fresh process: no warmup vs the warmup file replayed")
        print_table(
            rows,
            [
                ("export", "export"),
                ("batch", "sentences"),
                ("replay", "warmup replay s"),
                ("cold", "first, no warmup s"),
                ("warm_first", "first, after warmup s"),
                ("p50", "warm p50 s"),
                ("cold_ratio", "no warmup x p50"),
                ("warm_ratio", "after warmup x p50"),
            ],
        )
    clients = {TRANSLATOR: translator_clients}
    for name, result in c_results.items() if "error" not in c_results else ():
        clients[f"C runtime, {'XLA' if name == 'xla' else 'portable'}"] = result["clients"]
    print_clients(clients, args)
    print(json.dumps({"cpu": cpu_model(), "results": results, "c_runtime": c_results,
                      "translator_clients": translator_clients}))  # fmt: skip


def print_clients(clients, args):
    """Concurrent clients on one model: throughput against one client and against the Translator."""
    one = {(peer, e["batch"]): e for peer, entries in clients.items() for e in entries
           if e["clients"] == 1}  # fmt: skip
    rows = []
    for peer, entries in clients.items():
        for entry in entries:
            same = [e for e in clients[TRANSLATOR] if (e["clients"], e["batch"]) ==
                    (entry["clients"], entry["batch"])]  # fmt: skip
            rows.append({
                "peer": peer, "batch": entry["batch"], "clients": entry["clients"],
                "requests": entry["requests"], "throughput": entry["sentences_per_s"],
                "p50": entry["p50"] * 1000, "p99": entry["p99"] * 1000,
                "ratio": ratio(entry["sentences_per_s"],
                               one.get((peer, entry["batch"]), {}).get("sentences_per_s")),
                "vs": ratio(entry["sentences_per_s"], same[0]["sentences_per_s"]) if same else None,
            })  # fmt: skip
    print()
    print(f"Concurrent clients on one model, {args.client_requests} requests per setting")
    print_table(
        rows,
        [
            ("peer", "peer"),
            ("batch", "sentences"),
            ("clients", "clients"),
            ("requests", "requests"),
            ("throughput", "sentences/s"),
            ("p50", "p50 ms"),
            ("p99", "p99 ms"),
            ("ratio", "x 1 client"),
            ("vs", "x in-process"),
        ],
    )


if __name__ == "__main__":
    main()
