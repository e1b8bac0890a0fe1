"""The recurrent baseline the paper replaced: an LSTM encoder-decoder with attention.

Stacked LSTMs read the source; a stacked LSTM decoder reads the target
shifted right, and Luong et al.'s global attention ("general" score) over the
encoder's states turns each decoder state into an attentional state that the
tied embedding matrix projects to logits:

    a_t = softmax(h_t W_a H^T)    c_t = a_t H    h~_t = tanh(W_c [c_t; h_t])

It has the `Transformer`'s interface: the same dict inputs and logits, so the
same `compile_model` and `model.fit` train it; `encode`, `initialize_cache`,
`decode_step` and `reorder_cache`, so the same `Translator` and beam search
decode it. The training pass runs each decoder LSTM over the whole target
with the very cells a decoding step calls, one position at a time: the
recurrence the paper names as what keeps these models from parallelizing
over positions (§1, §4).

Not in the comparison: input feeding (h~_{t-1} into the next step) and a
bidirectional encoder; decoder states start at zero.

References:
    Luong, Pham and Manning, "Effective Approaches to Attention-based Neural
    Machine Translation", 2015, §3.1 (global attention, the general score).
"""

import keras
from keras import ops

from keras_transformer.config import RecurrentConfig
from keras_transformer.layers import TokenEmbedding, padding_mask
from keras_transformer.layers.transformer_layer import check_dtype_policy
from keras_transformer.translation_model import TranslationModel


@keras.saving.register_keras_serializable(package="keras_transformer")
class RecurrentBaseline(TranslationModel):
    """An LSTM encoder-decoder with global attention, a functional Keras model.

    Args:
        config: `RecurrentConfig` or its dict.
        dtype: the Keras dtype policy of every layer; default Keras' global one.
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = RecurrentConfig.from_dict(config)
        dtype = check_dtype_policy(kwargs.pop("dtype", None))
        units = config.hidden_dim
        self.token_embedding = TokenEmbedding(config.vocab_size, units, dtype=dtype)
        self.dropout = keras.layers.Dropout(config.dropout, dtype=dtype)
        self.encoder_layers = [
            keras.layers.LSTM(units, return_sequences=True, dtype=dtype, name=f"encoder_lstm_{i}")
            for i in range(config.num_layers)
        ]
        self.decoder_cells = [
            keras.layers.LSTMCell(units, dtype=dtype, name=f"decoder_cell_{i}")
            for i in range(config.num_layers)
        ]
        # The training pass runs each cell over whole targets.
        self.decoder_layers = [
            keras.layers.RNN(cell, return_sequences=True, dtype=dtype, name=f"decoder_lstm_{i}")
            for i, cell in enumerate(self.decoder_cells)
        ]
        self.attention_score = keras.layers.Dense(units, use_bias=False, dtype=dtype, name="W_a")
        self.attentional = keras.layers.Dense(
            units, activation="tanh", use_bias=False, dtype=dtype, name="W_c"
        )
        self.config = config

        self._build_graph(dtype, **kwargs)

    def encode(self, encoder_token_ids, training=None):
        """int `(B, S)` -> the top LSTM's states `(B, S, D)` and the bool `(B, S)` mask."""
        mask = padding_mask(encoder_token_ids)
        x = self.dropout(self.token_embedding(encoder_token_ids), training=training)
        for layer in self.encoder_layers:
            # Padding comes last: the mask keeps it out of the real positions' states.
            x = self.dropout(layer(x, mask=mask, training=training), training=training)
        return x, mask

    def decode(self, decoder_token_ids, encoder_output, encoder_padding_mask, training=None):
        """Teacher-forced decoder over whole targets: `(B, T)` -> `(B, T, V)` logits."""
        y = self.dropout(self.token_embedding(decoder_token_ids), training=training)
        for layer in self.decoder_layers:
            y = self.dropout(layer(y, training=training), training=training)
        return self._attend(y, encoder_output, encoder_padding_mask, training)

    def _attend(self, states, encoder_output, encoder_padding_mask, training=None):
        # (B, T, D) x (B, S, D) -> (B, T, S): the general score h_t W_a H^T
        scores = ops.einsum("btd,bsd->bts", self.attention_score(states), encoder_output)
        scores = ops.cast(scores, "float32")
        scores = ops.where(encoder_padding_mask[:, None, :], scores, -1e9)
        weights = ops.cast(ops.softmax(scores, axis=-1), encoder_output.dtype)
        # (B, T, S) x (B, S, D) -> (B, T, D), then h~_t = tanh(W_c [c_t; h_t])
        context = ops.einsum("bts,bsd->btd", weights, encoder_output)
        attentional = self.attentional(ops.concatenate([context, states], axis=-1))
        attentional = self.dropout(attentional, training=training)
        return self.token_embedding(attentional, reverse=True)

    def initialize_cache(self, encoder_output, encoder_padding_mask, max_length, beam_size=1):
        """Zero LSTM states and the encoder's, one row per beam: `(B*K, ...)`.

        `max_length` is unused: a recurrent state does not grow.
        """
        rows = ops.shape(encoder_output)[0] * beam_size
        zeros = ops.zeros((rows, self.config.hidden_dim), dtype=encoder_output.dtype)
        return {
            "states": [[zeros, zeros] for _ in self.decoder_cells],
            # (B, S, D) -> (B*K, S, D): beam k of sentence b at row b*K + k
            "encoder_output": ops.repeat(encoder_output, beam_size, axis=0),
            "encoder_padding_mask": ops.repeat(encoder_padding_mask, beam_size, axis=0),
        }

    @staticmethod
    def reorder_cache(cache, rows):
        """Beam row `rows[i]`'s LSTM states at row i; a beam's sentence never changes."""
        states = [[ops.take(x, rows, axis=0) for x in layer] for layer in cache["states"]]
        return {**cache, "states": states}

    def decode_step(self, token_ids, cache, index):
        """One decoder step: int `(B*K,)` -> float32 `(B*K, V)` logits and the cache."""
        y = self.token_embedding(ops.reshape(token_ids, (-1,)))
        states = []
        for cell, state in zip(self.decoder_cells, cache["states"], strict=True):
            y, state = cell(y, state, training=False)
            states.append(list(state))
        # (B*K, D) -> (B*K, 1, D) -> (B*K, 1, V) -> (B*K, V)
        logits = self._attend(y[:, None, :], cache["encoder_output"], cache["encoder_padding_mask"])
        return logits[:, 0, :], {**cache, "states": states}


def build_recurrent_baseline(config, dtype=None, **kwargs):
    """The LSTM-attention baseline for `config` (a `RecurrentConfig`)."""
    return RecurrentBaseline(config, dtype=dtype, **kwargs)
