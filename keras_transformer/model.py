"""The encoder-decoder model (paper §3, Figure 1) as one functional `keras.Model`.

`build_transformer(config)` returns a `Transformer`: a functional model from
`{"encoder_token_ids", "decoder_token_ids"}` to logits, trainable with
`model.fit`. Its `encode()`, `initialize_cache()` and `decode_step()` run the
same layers, through the same `_stack`, for cached decoding one token at a time.

`build_transformer(config, dtype="mixed_bfloat16")` computes in bfloat16 with
float32 variables (any Keras dtype policy; see docs/precision.md). What
rounding would harm stays float32 whatever the policy: the attention softmax,
normalization statistics, the logits and everything after them (loss,
metrics, search scores).
"""

import keras
from keras import ops

from keras_transformer.config import TransformerConfig
from keras_transformer.layers import (
    TokenEmbedding,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    padding_mask,
)
from keras_transformer.layers import cache as decoder_cache
from keras_transformer.layers.normalization import make_normalization, norm_name, normalize
from keras_transformer.layers.position_encoding import make_position_encoding
from keras_transformer.layers.transformer_layer import check_dtype_policy
from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT
from keras_transformer.translation_model import TranslationModel

__all__ = ["DECODER_INPUT", "ENCODER_INPUT", "Transformer", "build_transformer"]


@keras.saving.register_keras_serializable(package="keras_transformer")
class Transformer(TranslationModel):
    """The Transformer of paper §3 as a functional Keras model.

    Inputs are a dict of int32 `(B, S)` `encoder_token_ids` and `(B, T)`
    `decoder_token_ids` (the target shifted right, starting with BOS); the
    output is `(B, T, V)` float32 logits for the next target token. Padding
    masks are derived inside from `PAD_ID`.

    Args:
        config: `TransformerConfig` or its dict.
        dtype: the Keras dtype policy of every layer: "float32",
            "mixed_bfloat16", "mixed_float16", or a `keras.DTypePolicy`.
            Default None, Keras' global policy (float32 unless set). Kept in
            `get_config()`, so a `.keras` file reloads with it.

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        if not isinstance(config, TransformerConfig):
            raise TypeError(
                f"config must be a TransformerConfig or dict. Received: {type(config).__name__}"
            )
        dtype = check_dtype_policy(kwargs.pop("dtype", None))

        # === Layers ===
        def embedding(name):
            return TokenEmbedding(config.vocab_size, config.hidden_dim, dtype=dtype, name=name)

        def dropout(name):
            return keras.layers.Dropout(config.dropout, dtype=dtype, name=name)

        # §3.4: one matrix for source, target and the pre-softmax projection.
        if config.share_embeddings:
            self.token_embedding = embedding("token_embedding")
        else:
            self.encoder_token_embedding = embedding("encoder_token_embedding")
            self.decoder_token_embedding = embedding("decoder_token_embedding")
            self.output_projection = keras.layers.Dense(
                config.vocab_size, use_bias=False, dtype=dtype, name="output_projection"
            )
        self.position_encoding = make_position_encoding(
            config.position_encoding,
            config.max_length,
            config.hidden_dim,
            dtype,
            "position_encoding",
        )
        self.encoder_embedding_dropout = dropout("encoder_embedding_dropout")
        self.decoder_embedding_dropout = dropout("decoder_embedding_dropout")
        layer_args = dict(
            hidden_dim=config.hidden_dim,
            intermediate_dim=config.intermediate_dim,
            num_heads=config.num_heads,
            key_dim=config.key_dim,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            normalize_first=config.normalize_first,
            layer_norm_epsilon=config.layer_norm_epsilon,
            normalization=config.normalization,
            dtype=dtype,
        )
        self.encoder_layers = [
            TransformerEncoderLayer(**layer_args, name=f"encoder_layer_{i}")
            for i in range(config.num_layers)
        ]
        self.decoder_layers = [
            TransformerDecoderLayer(**layer_args, name=f"decoder_layer_{i}")
            for i in range(config.num_layers)
        ]
        if config.normalize_first:
            # Pre-LN leaves the residual stream unnormalized: close each stack.
            for side in ("encoder", "decoder"):
                name = norm_name(f"{side}_output", config.normalization)
                epsilon = config.layer_norm_epsilon
                setattr(self, name, make_normalization(config.normalization, epsilon, dtype, name))
        self.config = config

        self._build_graph(dtype, **kwargs)

    def _logits(self, x):
        """(B, T, D) -> (B, T, V) float32: the pre-softmax linear transformation."""
        if self.config.share_embeddings:
            return self.token_embedding(x, reverse=True)
        return ops.cast(self.output_projection(x), "float32")

    def _stack(self, side, token_ids, start_index=0, training=None, per_layer=None, **kwargs):
        """Embeds `token_ids` and runs the `side` ("encoder" or "decoder") stack.

        §3.4-3.5: scaled embeddings plus positions from `start_index` on, then
        dropout (§5.4); then every layer, called with `kwargs` and its own item
        of each list in `per_layer` (its caches); pre-LN ends with a norm.

        Returns:
            `(x, extras)`: `(B, T, D)` (or `(B, S, D)`) and, per layer, what it
            returned beside its output (a cache or attention scores), if any.
        """
        shared = self.config.share_embeddings
        embedding = self.token_embedding if shared else getattr(self, f"{side}_token_embedding")
        # (B, T) -> (B, T, D)
        x = embedding(token_ids)
        x = x + self.position_encoding(x, start_index=start_index)
        x = getattr(self, f"{side}_embedding_dropout")(x, training=training)
        extras = []
        for i, layer in enumerate(getattr(self, f"{side}_layers")):
            layer_kwargs = {name: items[i] for name, items in (per_layer or {}).items()}
            outputs = layer(x, **kwargs, **layer_kwargs, training=training)
            if isinstance(outputs, tuple):
                x, extra = outputs
                extras.append(extra)
            else:
                x = outputs
        if self.config.normalize_first:
            norm = getattr(self, norm_name(f"{side}_output", self.config.normalization))
            x = normalize(norm, x, padding_mask(token_ids), training)
        return x, extras

    def encode(self, encoder_token_ids, training=None):
        """The encoder stack: int `(B, S)` -> `(B, S, D)` and the bool `(B, S)` padding mask."""
        encoder_padding_mask = padding_mask(encoder_token_ids)
        x, _ = self._stack(
            "encoder", encoder_token_ids, training=training, padding_mask=encoder_padding_mask
        )
        return x, encoder_padding_mask

    def decode(self, decoder_token_ids, encoder_output, encoder_padding_mask, training=None):
        """Teacher-forced decoder over whole target prefixes: `(B, T)` -> `(B, T, V)` logits."""
        y, _ = self._stack(
            "decoder",
            decoder_token_ids,
            training=training,
            encoder_sequence=encoder_output,
            decoder_padding_mask=padding_mask(decoder_token_ids),
            encoder_padding_mask=encoder_padding_mask,
        )
        return self._logits(y)

    def attention_scores(self, encoder_token_ids, decoder_token_ids):
        """Teacher-forced attention probabilities, for plotting (paper Figures 3 to 5).

        Runs the same layers as `call` (inference mode) and keeps every
        layer's attention weights.

        Returns:
            A dict of lists, one entry per layer: "encoder_self_attention"
            `(B, h, S, S)`, "decoder_self_attention" `(B, h, T, T)` and
            "cross_attention" `(B, h, T, S)`.
        """
        encoder_padding_mask = padding_mask(encoder_token_ids)
        x, encoder_scores = self._stack(
            "encoder",
            encoder_token_ids,
            padding_mask=encoder_padding_mask,
            return_attention_scores=True,
        )
        _, decoder_scores = self._stack(
            "decoder",
            decoder_token_ids,
            encoder_sequence=x,
            decoder_padding_mask=padding_mask(decoder_token_ids),
            encoder_padding_mask=encoder_padding_mask,
            return_attention_scores=True,
        )
        return {
            "encoder_self_attention": encoder_scores,
            "decoder_self_attention": [scores["self_attention"] for scores in decoder_scores],
            "cross_attention": [scores["cross_attention"] for scores in decoder_scores],
        }

    def initialize_cache(self, encoder_output, encoder_padding_mask, max_length, beam_size=1):
        """The decoding cache for `max_length` target positions and K beams per sentence.

        Cross-attention keys and values are computed here, once per sentence,
        and shared by the sentence's beams, and so are the self-attention
        buffers; see `layers/cache.py` for the dict and its slot table.
        """
        return decoder_cache.initialize_cache(
            self.decoder_layers, encoder_output, encoder_padding_mask, max_length, beam_size
        )

    reorder_cache = staticmethod(decoder_cache.reorder_cache)

    def decode_step(self, token_ids, cache, index):
        """One cached decoder step: the step function of greedy and beam search.

        Args:
            token_ids: int `(B*K,)` or `(B*K, 1)`, the target token at
                position `index` of each of K beams per sentence (K = 1
                without beams).
            cache: from `initialize_cache()` or a previous step.
            index: int scalar, the position of `token_ids`.

        Returns:
            `(logits, cache)`: float32 `(B*K, V)` for the token at `index + 1`,
            and the cache with position `index` written.
        """
        cache, self_mask = decoder_cache.begin_step(cache, index)
        y, self_caches = self._stack(
            "decoder",
            # (B*K,) -> (B*K, 1)
            ops.reshape(token_ids, (-1, 1)),
            start_index=index,
            per_layer={
                "self_attention_cache": cache["self_attention"],
                "cross_attention_cache": cache["cross_attention"],
            },
            encoder_padding_mask=cache["encoder_padding_mask"],
            self_attention_cache_update_index=index,
            self_attention_mask=self_mask,
        )
        # (B*K, 1, V) -> (B*K, V)
        logits = self._logits(y)[:, 0, :]
        return logits, {**cache, "self_attention": self_caches}


def build_transformer(config, dtype=None, **kwargs):
    """Builds the Transformer for `config` (a `TransformerConfig`).

    `dtype` is the Keras dtype policy ("float32", "mixed_bfloat16",
    "mixed_float16", a `keras.DTypePolicy`; None: Keras' global policy).

    Example:
        >>> config = TransformerConfig.tiny(vocab_size=100)
        >>> model = build_transformer(config, dtype="mixed_bfloat16")
        >>> model.dtype_policy.compute_dtype, model.dtype_policy.variable_dtype
        ('bfloat16', 'float32')
    """
    return Transformer(config, dtype=dtype, **kwargs)
