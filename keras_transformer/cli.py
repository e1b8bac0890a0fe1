"""The `keras-transformer` command line (wiring only).

    keras-transformer --version
    keras-transformer presets [--vocab-size N]     # the architecture presets as JSON

The training workflow commands (train, translate, evaluate, average, export)
are added here as they land.
"""

import argparse
import json
import sys


def build_parser():
    from keras_transformer import __version__

    parser = argparse.ArgumentParser(
        prog="keras-transformer",
        description='The Transformer of "Attention Is All You Need" on Keras 3.',
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    presets = commands.add_parser("presets", help="print the architecture presets as JSON")
    presets.add_argument("--vocab-size", type=int, default=37000)
    return parser


def presets(args):
    from keras_transformer.config import PRESETS, TransformerConfig

    configs = {name: TransformerConfig.preset(name, args.vocab_size).to_dict() for name in PRESETS}
    print(json.dumps(configs, indent=2))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        {"presets": presets}[args.command](args)
    except ValueError as error:
        print(f"keras-transformer: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
