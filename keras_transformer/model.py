"""The encoder-decoder model (paper §3, Figure 1) as one functional `keras.Model`.

`build_transformer(config)` returns a `Transformer`: a functional model from
`{"encoder_token_ids", "decoder_token_ids"}` to logits, trainable with
`model.fit`. Its `encode()`, `initialize_cache()` and `decode_step()` call
the very same layers for cached decoding, one token at a time.

`build_transformer(config, dtype="mixed_bfloat16")` computes in bfloat16 with
float32 variables (any Keras dtype policy; see docs/precision.md). What
rounding would harm stays float32 whatever the policy: the attention softmax,
layer-norm statistics, the logits and everything after them (loss, metrics,
search scores).
"""

import keras
from keras import ops, tree

from keras_transformer.config import TransformerConfig
from keras_transformer.layers import (
    SinusoidalPositionEncoding,
    TokenEmbedding,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    beam_history_mask,
    padding_mask,
)

ENCODER_INPUT = "encoder_token_ids"
DECODER_INPUT = "decoder_token_ids"


@keras.saving.register_keras_serializable(package="keras_transformer")
class Transformer(keras.Model):
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

    def __setattr__(self, name, value):
        # PyTorch backend: a Keras layer is a torch `Module`, which cannot be an
        # attribute before `Module.__init__`, and that runs only once the
        # functional graph below exists. The graph tracks every layer anyway.
        if keras.backend.backend() == "torch" and not hasattr(self, "_tracker"):
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = TransformerConfig.from_dict(config)
        if not isinstance(config, TransformerConfig):
            raise TypeError(
                f"config must be a TransformerConfig or dict. Received: {type(config).__name__}"
            )
        dtype = model_dtype_policy(kwargs.pop("dtype", None))

        # === Layers ===
        # §3.4: one matrix for source, target and the pre-softmax projection.
        embedding_args = dict(vocab_size=config.vocab_size, hidden_dim=config.hidden_dim)
        if config.share_embeddings:
            self.token_embedding = TokenEmbedding(
                **embedding_args, dtype=dtype, name="token_embedding"
            )
        else:
            self.encoder_token_embedding = TokenEmbedding(
                **embedding_args, dtype=dtype, name="encoder_token_embedding"
            )
            self.decoder_token_embedding = TokenEmbedding(
                **embedding_args, dtype=dtype, name="decoder_token_embedding"
            )
            self.output_projection = keras.layers.Dense(
                config.vocab_size, use_bias=False, dtype=dtype, name="output_projection"
            )
        self.position_encoding = SinusoidalPositionEncoding(dtype=dtype, name="position_encoding")
        self.encoder_embedding_dropout = keras.layers.Dropout(
            config.dropout, dtype=dtype, name="encoder_embedding_dropout"
        )
        self.decoder_embedding_dropout = keras.layers.Dropout(
            config.dropout, dtype=dtype, name="decoder_embedding_dropout"
        )
        layer_args = dict(
            hidden_dim=config.hidden_dim,
            intermediate_dim=config.intermediate_dim,
            num_heads=config.num_heads,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            normalize_first=config.normalize_first,
            layer_norm_epsilon=config.layer_norm_epsilon,
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
            norm_args = dict(epsilon=config.layer_norm_epsilon, dtype=dtype)
            self.encoder_output_layer_norm = keras.layers.LayerNormalization(
                **norm_args, name="encoder_output_layer_norm"
            )
            self.decoder_output_layer_norm = keras.layers.LayerNormalization(
                **norm_args, name="decoder_output_layer_norm"
            )
        self.config = config

        # === Functional model ===
        encoder_token_ids = keras.Input(shape=(None,), dtype="int32", name=ENCODER_INPUT)
        decoder_token_ids = keras.Input(shape=(None,), dtype="int32", name=DECODER_INPUT)
        encoder_output, encoder_padding_mask = self.encode(encoder_token_ids)
        logits = self.decode(decoder_token_ids, encoder_output, encoder_padding_mask)
        super().__init__(
            inputs={ENCODER_INPUT: encoder_token_ids, DECODER_INPUT: decoder_token_ids},
            outputs=logits,
            **kwargs,
        )
        # Functional's constructor drops `dtype`; the policy decides loss
        # scaling in `compile` and must reach `get_config`.
        self.dtype_policy = dtype

    # --- the pieces, shared by the functional graph and cached decoding ---

    def _embedding(self, side):
        if self.config.share_embeddings:
            return self.token_embedding
        return getattr(self, f"{side}_token_embedding")

    def _embed(self, token_ids, side, start_index=0, training=None):
        """§3.4-3.5: scaled embeddings plus sinusoids, then dropout (§5.4)."""
        # (B, T) -> (B, T, D)
        x = self._embedding(side)(token_ids)
        x = x + self.position_encoding(x, start_index=start_index)
        return getattr(self, f"{side}_embedding_dropout")(x, training=training)

    def _logits(self, x):
        """(B, T, D) -> (B, T, V) float32: the pre-softmax linear transformation."""
        if self.config.share_embeddings:
            return self.token_embedding(x, reverse=True)
        return ops.cast(self.output_projection(x), "float32")

    def encode(self, encoder_token_ids, training=None):
        """Runs the encoder stack.

        Args:
            encoder_token_ids: int `(B, S)`.

        Returns:
            `(encoder_output, encoder_padding_mask)`: `(B, S, D)` and bool `(B, S)`.
        """
        encoder_padding_mask = padding_mask(encoder_token_ids)
        x = self._embed(encoder_token_ids, "encoder", training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=encoder_padding_mask, training=training)
        if self.config.normalize_first:
            x = self.encoder_output_layer_norm(x)
        return x, encoder_padding_mask

    def decode(self, decoder_token_ids, encoder_output, encoder_padding_mask, training=None):
        """Teacher-forced decoder over whole target prefixes: `(B, T)` -> `(B, T, V)` logits."""
        decoder_padding_mask = padding_mask(decoder_token_ids)
        y = self._embed(decoder_token_ids, "decoder", training=training)
        for layer in self.decoder_layers:
            y = layer(
                y,
                encoder_output,
                decoder_padding_mask=decoder_padding_mask,
                encoder_padding_mask=encoder_padding_mask,
                training=training,
            )
        if self.config.normalize_first:
            y = self.decoder_output_layer_norm(y)
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
        scores = {"encoder_self_attention": [], "decoder_self_attention": [], "cross_attention": []}
        encoder_padding_mask = padding_mask(encoder_token_ids)
        x = self._embed(encoder_token_ids, "encoder")
        for layer in self.encoder_layers:
            x, weights = layer(x, padding_mask=encoder_padding_mask, return_attention_scores=True)
            scores["encoder_self_attention"].append(weights)
        if self.config.normalize_first:
            x = self.encoder_output_layer_norm(x)
        y = self._embed(decoder_token_ids, "decoder")
        for layer in self.decoder_layers:
            y, weights = layer(
                y,
                x,
                decoder_padding_mask=padding_mask(decoder_token_ids),
                encoder_padding_mask=encoder_padding_mask,
                return_attention_scores=True,
            )
            scores["decoder_self_attention"].append(weights["self_attention"])
            scores["cross_attention"].append(weights["cross_attention"])
        return scores

    def initialize_cache(self, encoder_output, encoder_padding_mask, max_length, beam_size=1):
        """The decoding cache for `max_length` target positions and K beams per sentence.

        Cross-attention keys and values are computed here, once per sentence,
        and shared by the sentence's beams. So are the self-attention buffers:
        beam k's position t is slot `t * K + k` of its sentence's buffers, and
        "beam_slots" records which beam's slot holds each position of each
        beam's hypothesis, so that beam search reorders that small table
        instead of the buffers.

        Returns:
            A dict: "self_attention", a list of L pairs of zero
            `(B, h, T_max * K, d)` key and value buffers; "cross_attention", a
            list of L pairs `(B, h, S, d)`; "encoder_padding_mask", `(B, S)`;
            with K > 1, "beam_slots", int32 `(B*K, T_max)`, -1 where nothing
            is written yet (sentence b's beams at rows b*K .. b*K + K - 1).
        """
        config = self.config
        batch_size = ops.shape(encoder_output)[0]
        shape = (batch_size, config.num_heads, max_length * beam_size, config.head_dim)
        cache = {
            "self_attention": [
                tuple(ops.zeros(shape, dtype=encoder_output.dtype) for _ in "kv")
                for _ in self.decoder_layers
            ],
            "cross_attention": [
                layer.compute_cross_attention_cache(encoder_output) for layer in self.decoder_layers
            ],
            "encoder_padding_mask": encoder_padding_mask,
        }
        if beam_size > 1:
            cache["beam_slots"] = ops.full((batch_size * beam_size, max_length), -1, "int32")
        return cache

    @staticmethod
    def reorder_cache(cache, rows):
        """The cache with beam row `rows[i]`'s state at row i (beam search's `reorder_cache`).

        With beams sharing their sentence's buffers (`initialize_cache(...,
        beam_size=K)`) only the `(B*K, T_max)` "beam_slots" table moves;
        otherwise the self-attention buffers, one row per beam, do. The
        per-sentence cross-attention keys and values never move.
        """
        if "beam_slots" in cache:
            return {**cache, "beam_slots": ops.take(cache["beam_slots"], rows, axis=0)}
        buffers = tree.map_structure(lambda x: ops.take(x, rows, axis=0), cache["self_attention"])
        return {**cache, "self_attention": buffers}

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
        if len(token_ids.shape) == 1:
            # (B,) -> (B, 1)
            token_ids = token_ids[:, None]
        y = self._embed(token_ids, "decoder", start_index=index)
        self_mask = None
        if "beam_slots" in cache:
            # Each beam writes its own slot at `index`; the mask follows its history.
            batch_size = ops.shape(cache["encoder_padding_mask"])[0]
            rows = ops.shape(token_ids)[0]
            own = ops.arange(rows, dtype="int32") % (rows // batch_size)
            beam_slots = ops.slice_update(cache["beam_slots"], (0, index), own[:, None])
            self_mask = beam_history_mask(beam_slots, batch_size)
            cache = {**cache, "beam_slots": beam_slots}
        self_caches = []
        for layer, self_cache, cross_cache in zip(
            self.decoder_layers, cache["self_attention"], cache["cross_attention"], strict=True
        ):
            y, self_cache = layer(
                y,
                encoder_padding_mask=cache["encoder_padding_mask"],
                self_attention_cache=self_cache,
                self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache,
                self_attention_mask=self_mask,
            )
            self_caches.append(self_cache)
        if self.config.normalize_first:
            y = self.decoder_output_layer_norm(y)
        # (B, 1, V) -> (B, V)
        logits = self._logits(y)[:, 0, :]
        return logits, {**cache, "self_attention": self_caches}

    def call(self, inputs, training=None, mask=None):
        _validate_inputs(inputs)
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return {
            "config": self.config.to_dict(),
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _validate_inputs(inputs):
    if not isinstance(inputs, dict) or set(inputs) != {ENCODER_INPUT, DECODER_INPUT}:
        received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"Transformer expects a dict with keys {[ENCODER_INPUT, DECODER_INPUT]}. "
            f"Received: {received}"
        )
    for name in (ENCODER_INPUT, DECODER_INPUT):
        tensor = inputs[name]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" not in dtype or len(tensor.shape) != 2:
            raise ValueError(
                f"{name} must be integer token ids of shape (batch, length). "
                f"Received: dtype={dtype}, shape={tuple(tensor.shape)}"
            )


def model_dtype_policy(dtype):
    """`dtype` (a policy name, dict or `keras.DTypePolicy`; None: the global
    policy) as a float `keras.DTypePolicy`, or a ValueError naming the value."""
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError):
        policy = None
    floating = policy is not None and all(
        "float" in keras.backend.standardize_dtype(d)
        for d in (policy.compute_dtype, policy.variable_dtype)
    )
    if not floating or policy.quantization_mode is not None:
        raise ValueError(
            "dtype must be a float Keras dtype policy such as 'float32', 'mixed_bfloat16' or "
            f"'mixed_float16', or a keras.DTypePolicy. Received: dtype={dtype!r}"
        )
    return policy


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
