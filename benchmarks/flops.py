"""Model FLOPs of a training step, counted from the architecture, for utilization figures.

Counted as the matrix products of the forward pass (2 FLOPs a multiply-add)
times 3 for training (the backward pass costs twice the forward), the usual
convention of model FLOP utilization (MFU): recomputation, the softmax, the
normalization and the optimizer are not counted. Padding is counted as the
hardware computes it. Checked against XLA's own count (`cost_analysis()` of
the compiled forward pass, `small` at V 8,000, 16 pairs of 24 and 32
tokens): 7.146 GFLOPs here, 7.178 by XLA, which also counts the softmax and
the normalization.
"""

# Dense peak TFLOP/s of the accelerators we have measured on, by compute
# dtype (NVIDIA's data sheets: H100/H200 SXM; float32 without TF32).
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
}


def training_flops(config, batch_size, source_length, target_length):
    """FLOPs of one training step of `config` on `batch_size` pairs of the given lengths."""
    d, f, v = config.hidden_dim, config.intermediate_dim, config.vocab_size
    s, t, n = source_length, target_length, config.num_layers
    # Per layer and token: the attention projections (4 d^2 multiply-adds for
    # self-attention), the feed-forward network (2 d f), and the attention
    # itself (2 d per key: scores and the weighted sum).
    encoder = n * s * (4 * d * d + 2 * d * f + 2 * d * s)
    decoder_self = n * t * (4 * d * d + 2 * d * f + 2 * d * t)
    # Cross-attention: queries and outputs per target token, keys and values
    # per source token, the attention over the source.
    cross = n * (2 * d * d * t + 2 * d * d * s + 2 * d * s * t)
    logits = t * d * v
    multiply_adds = batch_size * (encoder + decoder_self + cross + logits)
    return 3 * 2 * multiply_adds


def peak_tflops(device_name, precision):
    """The device's dense peak for the policy's compute dtype, or None when not listed."""
    compute = "float32"
    if "16" in precision:
        compute = "bfloat16" if "bfloat16" in precision else "float16"
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_name:
            return peaks[compute]
    return None
