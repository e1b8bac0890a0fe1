"""Configuration records: architecture, training and decoding.

`TransformerConfig` holds the architecture only; its presets follow Table 3
of "Attention Is All You Need" (Vaswani et al., 2017). Training and decoding
knobs live in their own records so that a trained model's architecture can be
rebuilt from `config.json` without them.
"""

import dataclasses
import functools

from keras_transformer.checks import check_choice, check_key_dim
from keras_transformer.records import Record

# The allowed values of two architecture fields; the layers read them from here,
# so that the configs import no Keras (the command line parses before it loads).
NORMALIZATIONS = ("layer", "batch", "masked_batch")
POSITION_ENCODINGS = ("sinusoidal", "learned")


@dataclasses.dataclass(frozen=True)
class TransformerConfig(Record):
    """The architecture (paper §3). Defaults are the paper's base model.

    Args:
        vocab_size: int. Size of the joint source/target vocabulary.
        hidden_dim: int. d_model, 512 in the base model.
        intermediate_dim: int. d_ff, the feed-forward inner size, 2048.
        num_heads: int. h, must divide `hidden_dim`; 8.
        num_layers: int. N, layers in the encoder and in the decoder; 6.
        dropout: float. P_drop on embeddings and sublayer outputs (§5.4); 0.1.
        attention_dropout: float. Dropout on attention probabilities. Not in
            the paper, so 0.0.
        max_length: int. The longest source or target sequence the model
            accepts, and the size of the decoding cache. The sinusoids
            themselves have no limit; learned positions stop there.
        share_embeddings: bool. One matrix for the source embedding, the
            target embedding and the pre-softmax projection (§3.4).
        normalize_first: bool. False is the paper's post-layer-norm residual
            `LayerNorm(x + Sublayer(x))` (§3.1); True is pre-layer-norm with
            a final layer norm after each stack.
        layer_norm_epsilon: float. The paper does not say; 1e-6 as in the
            authors' tensor2tensor code. The batch norms use it too.
        normalization: str. The norm of every residual block and of a pre-LN
            stack's end: "layer", the paper's (§3.1); "batch", Keras' batch
            norm, statistics over every position of the batch, padding
            included; "masked_batch", a batch norm over the real tokens only
            (`layers/normalization.py`, docs/experiments.md).
        position_encoding: str. "sinusoidal", the paper's (§3.5), or
            "learned", one trained vector per position up to `max_length`
            (Table 3, row E).
        key_dim: int. d_k, the size of each head's queries and keys (Table 3,
            row B); None: hidden_dim / num_heads. Values keep d_v =
            hidden_dim / num_heads.
    """

    vocab_size: int
    hidden_dim: int = 512
    intermediate_dim: int = 2048
    num_heads: int = 8
    num_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    max_length: int = 256
    share_embeddings: bool = True
    normalize_first: bool = False
    layer_norm_epsilon: float = 1e-6
    normalization: str = "layer"
    position_encoding: str = "sinusoidal"
    # After the others, so that positional arguments keep their meaning.
    key_dim: int | None = None

    ARCHITECTURE = "transformer"  # a class attribute, not a field (see ARCHITECTURES)

    def __post_init__(self):
        self._check_positive(
            "vocab_size", "hidden_dim", "intermediate_dim", "num_heads", "num_layers", "max_length"
        )
        self._check_fraction("dropout", "attention_dropout")
        self._check_fields(check_key_dim, "key_dim")
        self._check(
            self.hidden_dim % self.num_heads == 0,
            "num_heads must divide hidden_dim. "
            f"Received: hidden_dim={self.hidden_dim}, num_heads={self.num_heads}",
        )
        self._check(
            self.hidden_dim % 2 == 0,
            f"hidden_dim must be even for the sinusoids. Received: hidden_dim={self.hidden_dim}",
        )
        self._check(
            isinstance(self.layer_norm_epsilon, float) and self.layer_norm_epsilon > 0,
            f"layer_norm_epsilon must be a positive float. "
            f"Received: layer_norm_epsilon={self.layer_norm_epsilon!r}",
        )
        self._check_fields(functools.partial(check_choice, NORMALIZATIONS), "normalization")
        self._check_fields(functools.partial(check_choice, POSITION_ENCODINGS), "position_encoding")
        for name in ("share_embeddings", "normalize_first"):
            value = getattr(self, name)
            self._check(
                isinstance(value, bool), f"{name} must be a bool. Received: {name}={value!r}"
            )

    @property
    def head_dim(self):
        """d_v = d_model / h, and d_k too unless `key_dim` sets it."""
        return self.hidden_dim // self.num_heads

    @classmethod
    def tiny(cls, vocab_size, **overrides):
        """A model for tests and the synthetic tasks (not in the paper)."""
        values = dict(hidden_dim=32, intermediate_dim=64, num_heads=4, num_layers=2, max_length=64)
        return cls(vocab_size=vocab_size, **{**values, **overrides})

    @classmethod
    def small(cls, vocab_size, **overrides):
        """The base model scaled down for small corpora and a CPU (not in the paper)."""
        values = dict(hidden_dim=256, intermediate_dim=1024, num_heads=4, num_layers=3)
        return cls(vocab_size=vocab_size, **{**values, **overrides})

    @classmethod
    def base(cls, vocab_size, **overrides):
        """Table 3, row "base": N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1 (65M)."""
        return cls(vocab_size=vocab_size, **overrides)

    @classmethod
    def big(cls, vocab_size, **overrides):
        """Table 3, row "big": N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3 (213M)."""
        values = dict(hidden_dim=1024, intermediate_dim=4096, num_heads=16, dropout=0.3)
        return cls(vocab_size=vocab_size, **{**values, **overrides})

    @classmethod
    def preset(cls, name, vocab_size, **overrides):
        """The preset called `name` ("tiny", "small", "base" or "big")."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Choose one of {list(PRESETS)}")
        return getattr(cls, name)(vocab_size, **overrides)


PRESETS = ("tiny", "small", "base", "big")


@dataclasses.dataclass(frozen=True)
class RecurrentConfig(Record):
    """The recurrent baseline's architecture (`recurrent.py`, docs/experiments.md).

    The defaults (D 368, 2 encoder and 2 decoder LSTM layers) give about as
    many parameters as `TransformerConfig.small(V)` (D 256, 3 + 3 layers): at
    V = 8000, 7.69M against 7.58M (tests/test_recurrent.py counts them).
    """

    vocab_size: int
    hidden_dim: int = 368
    num_layers: int = 2
    dropout: float = 0.1
    max_length: int = 256

    ARCHITECTURE = "recurrent"

    def __post_init__(self):
        self._check_positive("vocab_size", "hidden_dim", "num_layers", "max_length")
        self._check_fraction("dropout")

    @classmethod
    def small(cls, vocab_size, **overrides):
        """Matched to `TransformerConfig.small` in parameters."""
        return cls(vocab_size=vocab_size, **overrides)


# The models a work directory can hold, by the `architecture` its config.json
# names ("transformer" when it names none).
ARCHITECTURES = {kind.ARCHITECTURE: kind for kind in (TransformerConfig, RecurrentConfig)}


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class TrainingConfig(Record):
    """The training recipe (paper §5). Defaults are the paper's.

    Args:
        label_smoothing: float. eps_ls = 0.1 (§5.4).
        warmup_steps: int. 4000 (§5.3).
        learning_rate_scale: float. Multiplies the schedule; 1.0 is the
            paper's formula.
        beta_1, beta_2, epsilon: Adam's parameters, 0.9, 0.98 and 1e-9 (§5.3).
        max_tokens: int. Token budget of a batch, per side and per device;
            the paper uses about 25,000 on 8 GPUs, far too many for one CPU,
            so 4096. With `--devices N` a step's batch is N budgets.
        accumulation_steps: int. K: gradients of K batches (micro-batches)
            are averaged into one update, so one device reaches the paper's
            batch; the learning-rate schedule counts updates. 1: none.
        seed: int. Seeds shuffling, initialization and dropout.
        precision: str. The model's Keras dtype policy: "float32" (the
            paper's), "mixed_bfloat16" or "mixed_float16" (with loss scaling).
    """

    label_smoothing: float = 0.1
    warmup_steps: int = 4000
    learning_rate_scale: float = 1.0
    beta_1: float = 0.9
    beta_2: float = 0.98
    epsilon: float = 1e-9
    max_tokens: int = 4096
    accumulation_steps: int = 1
    seed: int = 1234
    precision: str = "float32"

    def __post_init__(self):
        self._check_positive("warmup_steps", "max_tokens", "accumulation_steps")
        self._check(
            self.precision in PRECISIONS,
            f"precision must be one of {', '.join(PRECISIONS)}. Received: {self.precision!r}",
        )
        self._check_fraction("label_smoothing", "beta_1", "beta_2")
        self._check(
            self.learning_rate_scale > 0,
            f"learning_rate_scale must be positive. "
            f"Received: learning_rate_scale={self.learning_rate_scale!r}",
        )
        self._check(
            self.epsilon > 0, f"epsilon must be positive. Received: epsilon={self.epsilon!r}"
        )


@dataclasses.dataclass(frozen=True)
class DecodingConfig(Record):
    """Decoding (§6.1): beam 4 (1 is greedy), length penalty alpha 0.6 (GNMT), input length + 50."""

    beam_size: int = 4
    length_penalty: float = 0.6
    max_extra_length: int = 50

    def __post_init__(self):
        self._check_positive("beam_size", "max_extra_length")
        value = self.length_penalty
        self._check(value >= 0, f"length_penalty must be >= 0. Received: length_penalty={value!r}")
