/* Translate with an exported SavedModel in TensorFlow's C runtime, as TF Serving does.
 *
 *     translate [--library LIB.so]... [--signature NAME] [--batch B]
 *               [--threads N --requests R] EXPORT_DIR [SENTENCE...]
 *
 * No Python: the program loads TensorFlow Text's kernel libraries with
 * TF_LoadLibrary (TF Serving links them statically), loads EXPORT_DIR
 * (saved_models/NAME/VERSION) with the "serve" tag through
 * TF_LoadSessionFromSavedModel, reads the signature's input and output tensor
 * names from the MetaGraphDef it gets back, and runs them with TF_SessionRun.
 *
 * The sentences (the arguments, else the lines of stdin) go in requests of at
 * most B (default 64). Each answer is one line: "translation<TAB>score".
 *
 * With --threads N, N threads share the one session and each sends R
 * requests of one sentence: thread t's request i is sentence (t + i) modulo
 * the number of sentences. After all have joined, one line per request:
 * "thread<TAB>request<TAB>sentence<TAB>translation<TAB>score".
 *
 * A request that fails prints "error: ..." on stderr and the program goes on;
 * the exit status is 1 when any request failed, 2 when loading failed.
 *
 * Build (tests/test_export.py does) against the installed tensorflow wheel:
 *     TF=$(python -c "import tensorflow, os; print(os.path.dirname(tensorflow.__file__))")
 *     gcc -O2 -pthread -I$TF/include serving/translate.c -o serving/translate \
 *         $TF/libtensorflow_cc.so.2 $TF/libtensorflow_framework.so.2 -Wl,-rpath,$TF
 */

#define _POSIX_C_SOURCE 200809L /* getline, strdup */

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

/* ---- The MetaGraphDef, read with the protocol buffer wire format ---- */

/* Field numbers in tensorflow/core/protobuf/meta_graph.proto. */
enum { META_GRAPH_SIGNATURE_DEF = 5, SIGNATURE_INPUTS = 1, SIGNATURE_OUTPUTS = 2 };
enum { MAP_KEY = 1, MAP_VALUE = 2, TENSOR_INFO_NAME = 1 };

typedef struct {
  const uint8_t *data;
  size_t size;
} Bytes;

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t byte = *(*p)++;
    *value |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return 1;
  }
  return 0;
}

/* The next field of a message: its number and, when length-delimited, its bytes.
 * Returns 0 at the end of the message or on malformed input. */
static int next_field(const uint8_t **p, const uint8_t *end, int *number, Bytes *bytes) {
  uint64_t key, length;
  if (*p >= end || !read_varint(p, end, &key)) return 0;
  *number = (int)(key >> 3);
  bytes->data = NULL;
  bytes->size = 0;
  switch (key & 7) {
    case 0: return read_varint(p, end, &length);
    case 1: *p += 8; return *p <= end;
    case 5: *p += 4; return *p <= end;
    case 2:
      if (!read_varint(p, end, &length) || length > (uint64_t)(end - *p)) return 0;
      bytes->data = *p;
      bytes->size = (size_t)length;
      *p += length;
      return 1;
    default: return 0; /* groups: not in these messages */
  }
}

/* The value of `key` in the map<string, message> field `number` of `message`. */
static int map_value(Bytes message, int number, const char *key, Bytes *value) {
  const uint8_t *p = message.data, *end = message.data + message.size;
  int field;
  Bytes entry;
  while (next_field(&p, end, &field, &entry)) {
    if (field != number || !entry.data) continue;
    const uint8_t *q = entry.data, *entry_end = entry.data + entry.size;
    Bytes part, found_key = {NULL, 0}, found_value = {NULL, 0};
    int part_field;
    while (next_field(&q, entry_end, &part_field, &part)) {
      if (part_field == MAP_KEY) found_key = part;
      if (part_field == MAP_VALUE) found_value = part;
    }
    if (found_key.size == strlen(key) && memcmp(found_key.data, key, found_key.size) == 0) {
      *value = found_value;
      return 1;
    }
  }
  return 0;
}

/* The graph tensor ("op:index") behind `signature`'s input or output `key`. */
static int signature_tensor(TF_Graph *graph, Bytes signature, int inputs_or_outputs,
                            const char *key, TF_Output *out) {
  Bytes info, name;
  int field;
  if (!map_value(signature, inputs_or_outputs, key, &info)) return 0;
  const uint8_t *p = info.data, *end = info.data + info.size;
  while (next_field(&p, end, &field, &name)) {
    if (field != TENSOR_INFO_NAME || !name.data) continue;
    char op[1024];
    if (name.size >= sizeof op) return 0;
    memcpy(op, name.data, name.size);
    op[name.size] = '\0';
    char *colon = strrchr(op, ':');
    out->index = colon ? atoi(colon + 1) : 0;
    if (colon) *colon = '\0';
    out->oper = TF_GraphOperationByName(graph, op);
    return out->oper != NULL;
  }
  return 0;
}

/* ---- The model: one session, shared by every thread ---- */

typedef struct {
  TF_Graph *graph;
  TF_Session *session;
  TF_Output text, translation, score;
} Model;

typedef struct {
  char *translation;
  float score;
} Answer;

static int load_model(Model *model, const char *export_dir, const char *signature_name) {
  TF_Status *status = TF_NewStatus();
  TF_SessionOptions *options = TF_NewSessionOptions();
  TF_Buffer *meta_graph = TF_NewBuffer();
  const char *tags[] = {"serve"};
  model->graph = TF_NewGraph();
  model->session = TF_LoadSessionFromSavedModel(options, NULL, export_dir, tags, 1, model->graph,
                                                meta_graph, status);
  int ok = TF_GetCode(status) == TF_OK;
  if (!ok) fprintf(stderr, "error: loading %s: %s\n", export_dir, TF_Message(status));
  Bytes meta = {meta_graph->data, meta_graph->length}, signature;
  if (ok && !map_value(meta, META_GRAPH_SIGNATURE_DEF, signature_name, &signature)) {
    fprintf(stderr, "error: the export has no signature \"%s\"\n", signature_name);
    ok = 0;
  }
  if (ok && !(signature_tensor(model->graph, signature, SIGNATURE_INPUTS, "text", &model->text) &&
              signature_tensor(model->graph, signature, SIGNATURE_OUTPUTS, "translation",
                               &model->translation) &&
              signature_tensor(model->graph, signature, SIGNATURE_OUTPUTS, "score", &model->score))) {
    fprintf(stderr, "error: signature \"%s\" is not text -> translation, score\n", signature_name);
    ok = 0;
  }
  TF_DeleteBuffer(meta_graph);
  TF_DeleteSessionOptions(options);
  TF_DeleteStatus(status);
  return ok;
}

/* Translates `count` sentences in one TF_SessionRun; fills `answers`. Thread-safe. */
static int translate(const Model *model, char **texts, int count, Answer *answers) {
  int64_t dims[1] = {count};
  TF_Tensor *input = TF_AllocateTensor(TF_STRING, dims, 1, sizeof(TF_TString) * (size_t)count);
  TF_TString *strings = (TF_TString *)TF_TensorData(input);
  for (int i = 0; i < count; i++) {
    TF_StringInit(&strings[i]);
    TF_StringCopy(&strings[i], texts[i], strlen(texts[i]));
  }
  TF_Output outputs[2] = {model->translation, model->score};
  TF_Tensor *values[2] = {NULL, NULL};
  TF_Status *status = TF_NewStatus();
  TF_SessionRun(model->session, NULL, &model->text, &input, 1, outputs, values, 2, NULL, 0, NULL,
                status);
  int ok = TF_GetCode(status) == TF_OK;
  if (!ok) {
    fprintf(stderr, "error: %s\n", TF_Message(status));
  } else {
    const TF_TString *translations = (const TF_TString *)TF_TensorData(values[0]);
    const float *scores = (const float *)TF_TensorData(values[1]);
    for (int i = 0; i < count; i++) {
      size_t size = TF_StringGetSize(&translations[i]);
      answers[i].translation = malloc(size + 1);
      memcpy(answers[i].translation, TF_StringGetDataPointer(&translations[i]), size);
      answers[i].translation[size] = '\0';
      answers[i].score = scores[i];
    }
  }
  for (int i = 0; i < 2; i++)
    if (values[i]) TF_DeleteTensor(values[i]);
  for (int i = 0; i < count; i++) TF_StringDealloc(&strings[i]);
  TF_DeleteTensor(input);
  TF_DeleteStatus(status);
  return ok;
}

/* ---- Threads: R one-sentence requests each, on the shared session ---- */

typedef struct {
  const Model *model;
  char **texts;
  int num_texts, thread, requests, failures;
  Answer *answers; /* one per request */
} Worker;

static void *work(void *arg) {
  Worker *worker = arg;
  for (int i = 0; i < worker->requests; i++) {
    int sentence = (worker->thread + i) % worker->num_texts;
    if (!translate(worker->model, &worker->texts[sentence], 1, &worker->answers[i])) {
      worker->answers[i].translation = NULL;
      worker->failures++;
    }
  }
  return NULL;
}

static int run_threads(const Model *model, char **texts, int num_texts, int threads,
                       int requests) {
  Worker *workers = calloc((size_t)threads, sizeof(Worker));
  pthread_t *ids = calloc((size_t)threads, sizeof(pthread_t));
  for (int t = 0; t < threads; t++) {
    workers[t] = (Worker){model, texts, num_texts, t, requests, 0,
                          calloc((size_t)requests, sizeof(Answer))};
    pthread_create(&ids[t], NULL, work, &workers[t]);
  }
  int failures = 0;
  for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
  for (int t = 0; t < threads; t++) {
    for (int i = 0; i < requests; i++) {
      Answer *answer = &workers[t].answers[i];
      if (!answer->translation) continue;
      printf("%d\t%d\t%d\t%s\t%.9g\n", t, i, (t + i) % num_texts, answer->translation,
             answer->score);
      free(answer->translation);
    }
    failures += workers[t].failures;
    free(workers[t].answers);
  }
  free(workers);
  free(ids);
  return failures;
}

/* ---- main ---- */

static char **read_lines(int *count) {
  size_t capacity = 16, length = 0, buffer_size = 0;
  char **lines = malloc(capacity * sizeof(char *)), *line = NULL;
  ssize_t read;
  *count = 0;
  while ((read = getline(&line, &buffer_size, stdin)) >= 0) {
    length = (size_t)read;
    while (length && (line[length - 1] == '\n' || line[length - 1] == '\r')) line[--length] = '\0';
    if ((size_t)*count == capacity) lines = realloc(lines, (capacity *= 2) * sizeof(char *));
    lines[(*count)++] = strdup(line);
  }
  free(line);
  return lines;
}

static int usage(void) {
  fprintf(stderr,
          "usage: translate [--library LIB.so]... [--signature NAME] [--batch B]\n"
          "                 [--threads N --requests R] EXPORT_DIR [SENTENCE...]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *export_dir = NULL, *signature_name = "serving_default";
  int batch = 64, threads = 0, requests = 1, num_texts = 0;
  char **texts = calloc((size_t)argc, sizeof(char *));
  TF_Status *status = TF_NewStatus();
  for (int i = 1; i < argc; i++) {
    int has_value = i + 1 < argc;
    if (strcmp(argv[i], "--library") == 0 && has_value) {
      TF_Library *library = TF_LoadLibrary(argv[++i], status);
      if (TF_GetCode(status) != TF_OK) {
        fprintf(stderr, "error: loading %s: %s\n", argv[i], TF_Message(status));
        return 2;
      }
      (void)library; /* kept loaded for the life of the process, as linked kernels are */
    } else if (strcmp(argv[i], "--signature") == 0 && has_value) {
      signature_name = argv[++i];
    } else if (strcmp(argv[i], "--batch") == 0 && has_value) {
      batch = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--threads") == 0 && has_value) {
      threads = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--requests") == 0 && has_value) {
      requests = atoi(argv[++i]);
    } else if (strncmp(argv[i], "--", 2) == 0) {
      return usage();
    } else if (!export_dir) {
      export_dir = argv[i];
    } else {
      texts[num_texts++] = argv[i];
    }
  }
  TF_DeleteStatus(status);
  if (!export_dir || batch < 1 || threads < 0 || requests < 1) return usage();
  if (num_texts == 0) {
    free(texts);
    texts = read_lines(&num_texts);
  }
  Model model;
  if (!load_model(&model, export_dir, signature_name)) return 2;

  int failures = 0;
  if (threads > 0) {
    failures = num_texts ? run_threads(&model, texts, num_texts, threads, requests) : 0;
  } else {
    Answer *answers = calloc((size_t)batch, sizeof(Answer));
    for (int start = 0; start < num_texts; start += batch) {
      int count = num_texts - start < batch ? num_texts - start : batch;
      if (!translate(&model, &texts[start], count, answers)) {
        failures++;
        continue;
      }
      for (int i = 0; i < count; i++) {
        printf("%s\t%.9g\n", answers[i].translation, answers[i].score);
        free(answers[i].translation);
      }
    }
    free(answers);
  }
  fflush(stdout);
  TF_Status *close_status = TF_NewStatus();
  TF_CloseSession(model.session, close_status);
  TF_DeleteSession(model.session, close_status);
  TF_DeleteGraph(model.graph);
  TF_DeleteStatus(close_status);
  return failures ? 1 : 0;
}
