"""The keras-hub peer of `decode_throughput.py`: a model of the same size, its samplers.

`TokenAndPositionEmbedding`, `TransformerEncoder` and `TransformerDecoder`
(with their self- and cross-attention caches), decoded by `GreedySampler` or
`BeamSampler`, behind the same `search(encoder_token_ids, row_limits,
max_decode_length)` as ours, so that `compile_search` compiles both alike.
"""


class VariableHolder:
    """What `compile_search` needs of a model: its variables."""

    def __init__(self, variables):
        self.variables = variables


def keras_hub_peer(args, beam_size=1):
    """`(search, VariableHolder)` for a keras-hub encoder-decoder of the benchmark's size."""
    import keras
    import keras_hub
    from keras import ops

    import keras_transformer as kt

    max_positions = 1 + max(int(n) for n in args.sweep.split(",") + [args.length])
    encoder_embedding = keras_hub.layers.TokenAndPositionEmbedding(
        args.vocab_size, max(args.source_length, max_positions), args.hidden_dim
    )
    decoder_embedding = keras_hub.layers.TokenAndPositionEmbedding(
        args.vocab_size, max_positions, args.hidden_dim
    )
    layer_args = dict(intermediate_dim=args.intermediate_dim, num_heads=args.num_heads)
    encoders = [keras_hub.layers.TransformerEncoder(**layer_args) for _ in range(args.num_layers)]
    decoders = [keras_hub.layers.TransformerDecoder(**layer_args) for _ in range(args.num_layers)]
    projection = keras.layers.Dense(args.vocab_size)
    head_dim = args.hidden_dim // args.num_heads

    # Build every layer once, outside any compiled function.
    source = ops.ones((1, args.source_length), "int32")
    x = encoder_embedding(source)
    for layer in encoders:
        x = layer(x)
    y = decoder_embedding(source)
    for layer in decoders:
        y = layer(y, x)
    projection(y)
    layers = [encoder_embedding, decoder_embedding, *encoders, *decoders, projection]
    variables = [v for layer in layers for v in layer.variables]
    sampler = (
        keras_hub.samplers.GreedySampler()
        if beam_size == 1
        else keras_hub.samplers.BeamSampler(num_beams=beam_size)
    )

    def search(encoder_token_ids, row_limits, max_decode_length):
        batch = encoder_token_ids.shape[0]
        padding = ops.not_equal(encoder_token_ids, kt.PAD_ID)
        encoded = encoder_embedding(encoder_token_ids)
        for layer in encoders:
            encoded = layer(encoded, padding_mask=padding)
        bos = ops.full((batch, 1), kt.BOS_ID, "int32")
        prompt = ops.concatenate([bos, ops.zeros((batch, max_decode_length), "int32")], 1)
        # Seed the caches: cross-attention keys/values once, from the encoder.
        self_shape = (batch, 2, max_decode_length + 1, args.num_heads, head_dim)
        cross_shape = (batch, 2, args.source_length, args.num_heads, head_dim)
        y = decoder_embedding(prompt[:, :1])
        self_caches, cross_caches = [], []
        for layer in decoders:
            y, self_cache, cross_cache = layer(
                y,
                encoded,
                encoder_padding_mask=padding,
                self_attention_cache=ops.zeros(self_shape),
                self_attention_cache_update_index=0,
                cross_attention_cache=ops.zeros(cross_shape),
                cross_attention_cache_update_index=0,
            )
            self_caches.append(self_cache)
            cross_caches.append(cross_cache)
        cache = dict(self=self_caches, cross=cross_caches, padding=padding, encoded=encoded)

        def next_token(prompt, cache, index):
            previous = ops.slice(prompt, (0, index - 1), (ops.shape(prompt)[0], 1))
            y = decoder_embedding(previous, start_index=index - 1)
            new_self = []
            for layer, self_cache, cross_cache in zip(
                decoders, cache["self"], cache["cross"], strict=True
            ):
                y, self_cache, _ = layer(
                    y,
                    cache["encoded"],
                    encoder_padding_mask=cache["padding"],
                    self_attention_cache=self_cache,
                    self_attention_cache_update_index=index - 1,
                    cross_attention_cache=cross_cache,
                    cross_attention_cache_update_index=None,
                )
                new_self.append(self_cache)
            logits = projection(y)[:, 0, :]
            return logits, None, {**cache, "self": new_self}

        mask = ops.concatenate(
            [ops.ones((batch, 1), "bool"), ops.zeros((batch, max_decode_length), "bool")], 1
        )
        tokens = sampler(next_token, prompt, cache=cache, index=1, mask=mask)
        return tokens, None

    return search, VariableHolder(variables)
