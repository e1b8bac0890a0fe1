import itertools
import os

import keras
import numpy as np
import pytest
from helpers import other_backend, random_ids, randomize_moving_statistics, run_python, to_numpy

import keras_transformer as kt
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT


def inputs(source, target):
    return {ENCODER_INPUT: source, DECODER_INPUT: target}


@pytest.fixture
def model(tiny_config):
    return kt.build_transformer(tiny_config)


@pytest.fixture
def batch(tiny_config):
    rng = np.random.default_rng(0)
    source = random_ids(rng, 3, 7, tiny_config.vocab_size, pad_tail=2)
    target = random_ids(rng, 3, 6, tiny_config.vocab_size, pad_tail=1)
    return source, target


def test_output_is_logits_over_the_vocabulary(model, batch, tiny_config):
    logits = model(inputs(*batch))
    assert tuple(logits.shape) == (3, 6, tiny_config.vocab_size)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_causality(model, batch):
    source, target = batch
    logits = to_numpy(model(inputs(source, target)))
    for t in range(target.shape[1] - 1):
        changed = target.copy()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % 30 + 4
        changed_logits = to_numpy(model(inputs(source, changed)))
        np.testing.assert_allclose(changed_logits[:, : t + 1], logits[:, : t + 1], atol=1e-5)
        assert not np.allclose(changed_logits[:, t + 1 :], logits[:, t + 1 :], atol=1e-3)


def test_padding_does_not_change_real_positions(model, batch):
    source, target = batch
    logits = to_numpy(model(inputs(source, target)))
    longer_source = np.pad(source, ((0, 0), (0, 5)))
    longer_target = np.pad(target, ((0, 0), (0, 4)))
    padded_logits = to_numpy(model(inputs(longer_source, longer_target)))
    np.testing.assert_allclose(padded_logits[:, : target.shape[1]], logits, atol=1e-5)
    # The padding is seen: changing a real source token does change the logits.
    changed = source.copy()
    changed[:, 0] = (changed[:, 0] + 1) % 30 + 4
    assert not np.allclose(to_numpy(model(inputs(changed, target))), logits, atol=1e-4)


# Architecture variants beside the paper's: each must decode with the cache as it scores whole.
VARIANTS = {
    "paper": {},
    "batch_norm": {"normalization": "batch"},
    "masked_batch_norm_pre_ln": {"normalization": "masked_batch", "normalize_first": True},
    "learned_positions": {"position_encoding": "learned"},
    # Table 3, row B: d_k = 4 against d_v = 32 / 4 = 8; the cache holds keys of d_k.
    "small_keys": {"key_dim": 4},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decode_step_equals_full_decoder(tiny_config, batch, variant):
    model = kt.build_transformer(tiny_config.replace(**VARIANTS[variant]))
    randomize_moving_statistics(model)  # batch norms: not the identity of a fresh layer
    source, target = batch
    full = to_numpy(model(inputs(source, target)))
    encoder_output, encoder_mask = model.encode(source)
    cache = model.initialize_cache(encoder_output, encoder_mask, max_length=target.shape[1])
    for t in range(target.shape[1]):
        logits, cache = model.decode_step(target[:, t], cache, t)
        # Teacher forcing hides padded target keys; decoding never feeds padding.
        real = target[:, t] != kt.PAD_ID
        np.testing.assert_allclose(to_numpy(logits)[real], full[real, t], atol=1e-4)


def test_trainable_weight_count_is_pinned(tiny_config):
    model = kt.build_transformer(tiny_config)
    # 40*32 shared embedding; encoder layer: 4 projections (32*32+32) + FFN
    # (32*64+64 + 64*32+32) + 2 norms (2*32); decoder layer adds 4 projections and a norm.
    encoder_layer = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 64
    decoder_layer = encoder_layer + 4 * (32 * 32 + 32) + 64
    expected = 40 * 32 + 2 * encoder_layer + 2 * decoder_layer
    assert model.count_params() == expected == 44032
    assert len(model.trainable_weights) == 1 + 2 * 16 + 2 * 26
    untied = kt.build_transformer(tiny_config.replace(share_embeddings=False))
    assert untied.count_params() == expected + 2 * 40 * 32


def test_key_dim_resizes_queries_and_keys_only_and_survives_a_keras_file(
    tiny_config, batch, tmp_path
):
    """Table 3, row B: d_k = 4 instead of D / h = 8; values and outputs keep D."""
    model = kt.build_transformer(tiny_config.replace(key_dim=4))
    attention = model.decoder_layers[0].cross_attention
    assert tuple(attention.query_dense.kernel.shape) == tuple(attention.key_dense.kernel.shape)
    assert tuple(attention.key_dense.kernel.shape) == (32, 4 * 4)
    assert tuple(attention.value_dense.kernel.shape) == (32, 32)
    assert tuple(attention.output_dense.kernel.shape) == (32, 32)
    # Each of the 6 attentions (2 encoder, 2 x 2 decoder) loses two (32*32+32)
    # projections and gains two (32*16+16).
    assert model.count_params() == 44032 - 6 * 2 * ((32 * 32 + 32) - (32 * 16 + 16)) == 37696
    logits = to_numpy(model(inputs(*batch)))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.config.key_dim == 4
    assert restored.encoder_layers[1].self_attention.key_dim == 4
    np.testing.assert_array_equal(to_numpy(restored(inputs(*batch))), logits)


def test_every_kernel_starts_from_its_own_draw(tiny_config):
    """No two projections (or a projection and the embedding) start as copies.

    One initializer instance handed to several sublayers returns the same
    draw each time; Q = K = V = O would be the result.
    """
    model = kt.build_transformer(tiny_config)
    matrices = {
        w.path: to_numpy(w).ravel()
        for w in model.weights
        if w.path.endswith(("kernel", "embeddings"))
    }
    assert len(matrices) == 1 + 2 * 6 + 2 * 10  # embedding; 6 kernels per encoder, 10 per decoder
    leading = {path: tuple(np.round(values[:4], 6)) for path, values in matrices.items()}
    copies = [
        (first, second)
        for first, second in itertools.combinations(leading, 2)
        if leading[first] == leading[second]
    ]
    assert not copies, f"{len(copies)} pairs start equal, e.g. {copies[:3]}"
    # Independent draws, as glorot_uniform gives: query and key are uncorrelated.
    query = matrices["encoder_layer_0/self_attention/query/kernel"]
    key = matrices["encoder_layer_0/self_attention/key/kernel"]
    assert abs(np.corrcoef(query, key)[0, 1]) < 0.2


def test_base_preset_has_about_63m_parameters():
    model = kt.build_transformer(kt.TransformerConfig.base(vocab_size=37000))
    embeddings = [w for w in model.trainable_weights if "embedding" in w.path]
    assert len(embeddings) == 1, "the shared matrix must be counted once"
    assert 62.5e6 < model.count_params() < 63.5e6


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch, pre-LN
@pytest.mark.parametrize("normalize_first", [False, True])
def test_equals_torch_nn_transformer(tiny_config, batch, normalize_first):
    """Our model against `torch.nn.Transformer` loaded with the same weights.

    Weight mapping (our Dense kernels are (in, out), torch weights (out, in)):
      self_attention.{query,key,value}   -> self_attn.in_proj_weight rows [q; k; v] (kernel.T)
      self_attention.attention_output    -> self_attn.out_proj
      cross_attention.*                  -> multihead_attn.*
      feedforward.feedforward_intermediate_dense / _output_dense -> linear1 / linear2
      self_attention_layer_norm, cross_attention_layer_norm, feedforward_layer_norm
                                         -> norm1, norm2 (decoder: norm2 is cross), norm3
      encoder/decoder_output_layer_norm  -> encoder.norm / decoder.norm (pre-LN only;
                                            post-LN has no stack norm: torch's is removed)
    Embeddings, sinusoids and the tied projection are computed in NumPy around it.
    """
    torch = pytest.importorskip("torch")
    config = tiny_config.replace(normalize_first=normalize_first)
    model = kt.build_transformer(config)
    source, target = batch
    ours = to_numpy(model(inputs(source, target)))

    D = config.hidden_dim
    reference = torch.nn.Transformer(
        d_model=D,
        nhead=config.num_heads,
        num_encoder_layers=config.num_layers,
        num_decoder_layers=config.num_layers,
        dim_feedforward=config.intermediate_dim,
        dropout=0.0,
        activation="relu",
        layer_norm_eps=config.layer_norm_epsilon,
        batch_first=True,
        norm_first=normalize_first,
    ).eval()

    def tensor(variable, transpose=False):
        value = to_numpy(variable)
        return torch.tensor(value.T if transpose else value)

    def load_attention(ours_attention, theirs):
        projections = [
            ours_attention.query_dense,
            ours_attention.key_dense,
            ours_attention.value_dense,
        ]
        theirs.in_proj_weight.copy_(torch.cat([tensor(p.kernel, True) for p in projections]))
        theirs.in_proj_bias.copy_(torch.cat([tensor(p.bias) for p in projections]))
        theirs.out_proj.weight.copy_(tensor(ours_attention.output_dense.kernel, True))
        theirs.out_proj.bias.copy_(tensor(ours_attention.output_dense.bias))

    def load_norm(ours_norm, theirs):
        theirs.weight.copy_(tensor(ours_norm.gamma))
        theirs.bias.copy_(tensor(ours_norm.beta))

    def load_feedforward(ours_layer, theirs):
        ffn = ours_layer.feedforward
        theirs.linear1.weight.copy_(tensor(ffn.intermediate_dense.kernel, True))
        theirs.linear1.bias.copy_(tensor(ffn.intermediate_dense.bias))
        theirs.linear2.weight.copy_(tensor(ffn.output_dense.kernel, True))
        theirs.linear2.bias.copy_(tensor(ffn.output_dense.bias))

    with torch.no_grad():
        for ours_layer, theirs in zip(model.encoder_layers, reference.encoder.layers, strict=True):
            load_attention(ours_layer.self_attention, theirs.self_attn)
            load_feedforward(ours_layer, theirs)
            load_norm(ours_layer.self_attention_layer_norm, theirs.norm1)
            load_norm(ours_layer.feedforward_layer_norm, theirs.norm2)
        for ours_layer, theirs in zip(model.decoder_layers, reference.decoder.layers, strict=True):
            load_attention(ours_layer.self_attention, theirs.self_attn)
            load_attention(ours_layer.cross_attention, theirs.multihead_attn)
            load_feedforward(ours_layer, theirs)
            load_norm(ours_layer.self_attention_layer_norm, theirs.norm1)
            load_norm(ours_layer.cross_attention_layer_norm, theirs.norm2)
            load_norm(ours_layer.feedforward_layer_norm, theirs.norm3)
        if normalize_first:
            load_norm(model.encoder_output_layer_norm, reference.encoder.norm)
            load_norm(model.decoder_output_layer_norm, reference.decoder.norm)
        else:
            reference.encoder.norm = torch.nn.Identity()
            reference.decoder.norm = torch.nn.Identity()

    embeddings = to_numpy(model.token_embedding.embeddings)

    def embed(ids):
        positions = np.arange(ids.shape[1])[:, None] / 10000 ** (np.arange(0, D, 2) / D)
        sinusoids = np.stack([np.sin(positions), np.cos(positions)], -1).reshape(ids.shape[1], D)
        return torch.tensor((embeddings[ids] * np.sqrt(D) + sinusoids).astype("float32"))

    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        memory = reference.encoder(
            embed(source), src_key_padding_mask=torch.tensor(source == kt.PAD_ID)
        )
        causal = torch.triu(torch.ones(target.shape[1], target.shape[1], dtype=torch.bool), 1)
        decoded = reference.decoder(
            embed(target),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=torch.tensor(target == kt.PAD_ID),
            memory_key_padding_mask=torch.tensor(source == kt.PAD_ID),
        ).numpy()
    torch.backends.mha.set_fastpath_enabled(True)

    real = source != kt.PAD_ID
    encoder_output, _ = model.encode(source)
    np.testing.assert_allclose(to_numpy(encoder_output)[real], memory.numpy()[real], atol=1e-4)
    np.testing.assert_allclose(ours, decoded @ embeddings.T, atol=1e-4)


def test_keras_file_round_trip(model, batch, tmp_path):
    logits = to_numpy(model(inputs(*batch)))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, kt.Transformer)
    assert restored.config == model.config
    np.testing.assert_array_equal(to_numpy(restored(inputs(*batch))), logits)


def test_keras_file_from_release_0_2_still_loads():
    # Saved by keras-transformer 0.2.0 on JAX (tiny preset, vocab 48, seed 7), with the
    # logits it gave for a fixed padded batch: layer renames or moved modules must not
    # break files users already have.
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    expected = np.load(os.path.join(fixtures, "tiny_v0_2_logits.npz"))
    restored = keras.saving.load_model(os.path.join(fixtures, "tiny_v0_2.keras"))
    assert isinstance(restored, kt.Transformer)
    logits = restored(
        {
            "encoder_token_ids": expected["encoder_token_ids"],
            "decoder_token_ids": expected["decoder_token_ids"],
        },
        training=False,
    )
    np.testing.assert_allclose(to_numpy(logits), expected["logits"], atol=1e-5)


SAVE_UNDER_OTHER_BACKEND = """
import numpy as np, keras, keras_transformer as kt
keras.utils.set_random_seed(7)
model = kt.build_transformer(kt.TransformerConfig.tiny(vocab_size=40, dropout=0.0))
source = np.load({directory!r} + "/source.npy"); target = np.load({directory!r} + "/target.npy")
logits = model({{"encoder_token_ids": source, "decoder_token_ids": target}})
np.save({directory!r} + "/logits.npy", keras.ops.convert_to_numpy(logits))
model.save({directory!r} + "/model.keras")
model.save_weights({directory!r} + "/model.weights.h5")
"""


def test_weights_move_between_backends(tiny_config, batch, tmp_path):
    source, target = batch
    directory = str(tmp_path)
    np.save(f"{directory}/source.npy", source)
    np.save(f"{directory}/target.npy", target)
    run_python(SAVE_UNDER_OTHER_BACKEND.format(directory=directory), other_backend())
    expected = np.load(f"{directory}/logits.npy")

    restored = keras.saving.load_model(f"{directory}/model.keras")
    np.testing.assert_allclose(to_numpy(restored(inputs(source, target))), expected, atol=1e-5)
    model = kt.build_transformer(tiny_config)
    assert not np.allclose(to_numpy(model(inputs(source, target))), expected, atol=1e-3)
    model.load_weights(f"{directory}/model.weights.h5")
    np.testing.assert_allclose(to_numpy(model(inputs(source, target))), expected, atol=1e-5)


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda s, t: inputs(s.astype("float32"), t), "encoder_token_ids must be integer.*float32"),
        (lambda s, t: inputs(s, t[0]), r"decoder_token_ids must be integer.*shape=\(6,\)"),
        (lambda s, t: {ENCODER_INPUT: s}, 'Missing data for input "decoder_token_ids"'),
    ],
)
def test_bad_inputs_say_what_was_expected(model, batch, make_inputs, message):
    with pytest.raises(ValueError, match=message):
        model(make_inputs(*batch))


def test_config_type_is_checked():
    with pytest.raises(TypeError, match="TransformerConfig or dict. Received: int"):
        kt.Transformer(3)


def test_attention_scores_are_distributions_that_respect_the_masks(tiny_config):
    model = kt.build_transformer(tiny_config)
    rng = np.random.default_rng(0)
    source = random_ids(rng, 2, 7, tiny_config.vocab_size, pad_tail=2)
    target = random_ids(rng, 2, 5, tiny_config.vocab_size)
    scores = {
        k: [to_numpy(w) for w in v] for k, v in model.attention_scores(source, target).items()
    }
    layers = tiny_config.num_layers
    assert [len(v) for v in scores.values()] == [layers] * 3
    cross = scores["cross_attention"][-1]
    assert cross.shape == (2, tiny_config.num_heads, 5, 7)
    np.testing.assert_allclose(cross.sum(-1), 1.0, atol=1e-5)
    assert np.abs(cross[..., -2:]).max() < 1e-6  # never on source padding
    causal = scores["decoder_self_attention"][0]
    assert np.abs(np.triu(causal, k=1)).max() < 1e-6  # never on a later target token
