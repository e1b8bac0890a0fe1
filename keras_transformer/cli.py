"""The `keras-transformer` command line (wiring only).

    keras-transformer train --src train.en --tgt train.de --workdir runs/en-de --preset small \
        [--valid-src F --valid-tgt F] [--set key=value ...] [--devices N] \
        [--num-processes N --process-id I --coordinator HOST:PORT] \
        [--max-steps N | --epochs N | --time-budget MIN]
    keras-transformer translate --workdir runs/en-de [--input F --output F] [--beam-size 4]
    keras-transformer evaluate --workdir runs/en-de --src test.en --ref test.de
    keras-transformer average --workdir runs/en-de --last 5
    keras-transformer export --workdir runs/en-de --out saved_models/en-de
    keras-transformer presets

`--backend tensorflow|jax|torch` picks the Keras backend. `--corpus
number-words:de` (fr, es) uses the built-in corpus instead of files.

The `keras-transformer` command starts in `keras_transformer_cli`, which
imports this module before Keras: arguments are parsed first, so `--help` is
quick and `--backend` is set in this process. (Started as `python -m
keras_transformer`, the package has imported Keras already, and a different
`--backend` runs the command again in a new process.) A failure prints one
line and exits 1 (or 2 for bad input); `--debug` shows its traceback.
"""

import os
import subprocess
import sys

from keras_transformer import allocator
from keras_transformer.arguments import build_parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export" and args.format == "onnx":
            args.backend = _onnx_backend(args.backend)
        status = _use_backend(args.backend, argv)
        if status is not None:
            return status
        # Large tensors reuse freed memory instead of faulting in new pages (allocator.py).
        allocator.reuse_freed_memory()
        # Keras, and every class a .keras file names, registered before a command reads one.
        from keras_transformer import api, commands  # noqa: F401

        getattr(commands, args.command)(args)
    except KeyboardInterrupt:
        print("keras-transformer: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        status, message = _explain(error)
        print(f"keras-transformer: {message}", file=sys.stderr)
        return status
    return 0


def _use_backend(backend, argv):
    """Keras reads its backend once, at import: set it first, in this process.

    Returns None, or the exit status of the command run again under `backend`
    when Keras was imported before this function could set it.
    """
    # TensorFlow's C++ start-up lines (INFO) are noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if backend is None:
        return None
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
        return None
    import keras

    if keras.backend.backend() == backend:
        return None
    # A program (or a package __init__) imported Keras first: only a new process can switch.
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-m", "keras_transformer", *argv], env=env).returncode


def _onnx_backend(backend):
    """The ONNX exporter is PyTorch's: the export runs on the PyTorch backend."""
    if backend not in (None, "torch"):
        raise ValueError(f"--format onnx exports on the PyTorch backend, not --backend {backend}")
    return "torch"


def _explain(error):
    """`(exit status, one line)` for a failure: 2 for bad input, 1 for the rest."""
    text = " ".join(str(error).split()) or type(error).__name__
    run = sys.modules.get("keras_transformer.run")  # not imported: not a TrainingError
    if run is not None and isinstance(error, run.TrainingError):
        return 1, text
    if isinstance(error, (ValueError, FileNotFoundError, FileExistsError)):  # CorpusError too
        return 2, f"error: {text}"
    return 1, f"error: {type(error).__name__}: {text} (--debug shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
