"""The `keras-transformer` command's launcher: outside the package, on purpose.

Importing `keras_transformer` imports Keras, which fixes its backend for the
process and takes seconds. The launcher imports the package with the API
deferred, so that the command line parses its arguments first: `--backend`
takes effect in this process and `--help` answers at once. Then the command
imports what it runs (see `keras_transformer.cli`).

    keras-transformer --help
    python -m keras_transformer_cli --help     # the same
"""

import os
import sys


def main(argv=None):
    os.environ["KERAS_TRANSFORMER_DEFER_API"] = "1"
    try:
        from keras_transformer import cli
    finally:
        # Not inherited by the processes a command starts.
        del os.environ["KERAS_TRANSFORMER_DEFER_API"]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
