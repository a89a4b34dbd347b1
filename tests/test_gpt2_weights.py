"""GPT-2 weights: import from and export to the Hugging Face format, proved against
``transformers.GPT2LMHeadModel`` with random (seeded) weights, offline."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import fake_hub, hf_logits, tiny_config

from sydsgpt.gpt2_weights import (
    export_gpt2_weights,
    gpt2_config_to_sydsgpt,
    gpt2_to_sydsgpt_state_dict,
    load_gpt2_weights,
    sydsgpt_config_to_gpt2,
)
from sydsgpt.config import Kernels
from sydsgpt.model import SydsGPT, generate_simple

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

VOCAB = 101
SMALL = {
    "vocab_size": VOCAB,
    "n_positions": 32,
    "n_embd": 48,
    "n_layer": 2,
    "n_head": 4,
    "bos_token_id": 100,
    "eos_token_id": 100,
}
TOL = {"atol": 1e-4, "rtol": 0.0}


def random_gpt2(seed: int = 0, **overrides) -> "transformers.GPT2LMHeadModel":
    """A GPT-2 with random weights; every parameter (biases, layer norms too) is perturbed
    so that a mix-up of any two tensors changes the logits."""
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**SMALL, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def hf_model():
    return random_gpt2()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(1))


def assert_same_model(ours: SydsGPT, hf, ids: torch.Tensor, new_tokens: int = 8) -> None:
    """Logits within 1e-4 and identical greedy continuations."""
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf, ids), **TOL)
    prompt = ids[:1, :6]
    theirs = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new_tokens,
        pad_token_id=hf.config.eos_token_id,
    )
    mine = generate_simple(ours, prompt, new_tokens, ours.config.context_length)
    assert torch.equal(mine, theirs)


# ------------------------------------------------------------------------- import


def test_import_from_transformers_model(hf_model, ids) -> None:
    ours = load_gpt2_weights(hf_model)
    assert not ours.training and ours.config.qkv_bias and ours.config.tie_weights
    assert ours.config.dropout == hf_model.config.resid_pdrop
    assert_same_model(ours, hf_model, ids)


def test_import_from_saved_folder_and_file(hf_model, ids, tmp_path) -> None:
    hf_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    expected = hf_logits(hf_model, ids)
    for source in (tmp_path, str(tmp_path), tmp_path / "model.safetensors"):
        with torch.no_grad():
            torch.testing.assert_close(load_gpt2_weights(source)(ids), expected, **TOL)


def test_import_legacy_pytorch_bin_without_prefix(hf_model, ids, tmp_path) -> None:
    """The original uploads use names without ``transformer.`` and store the causal-mask
    buffers ``h.N.attn.bias``; ``pytorch_model.bin`` is read with ``weights_only=True``."""
    n = SMALL["n_positions"]
    legacy = {
        k.removeprefix("transformer."): v
        for k, v in hf_model.state_dict().items()
        if k != "lm_head.weight"
    }
    for i in range(SMALL["n_layer"]):
        legacy[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        legacy[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(hf_model.config.to_json_string())
    with torch.no_grad():
        torch.testing.assert_close(
            load_gpt2_weights(tmp_path)(ids), hf_logits(hf_model, ids), **TOL
        )


def test_import_state_dict_needs_config_or_model(hf_model, ids) -> None:
    state = hf_model.state_dict()
    with pytest.raises(ValueError, match="pass config="):
        load_gpt2_weights(state)
    from_config = load_gpt2_weights(state, config=hf_model.config.to_dict())
    into_model = load_gpt2_weights(state, model=SydsGPT(gpt2_config_to_sydsgpt(hf_model.config)))
    with torch.no_grad():
        torch.testing.assert_close(from_config(ids), hf_logits(hf_model, ids), **TOL)
        torch.testing.assert_close(into_model(ids), hf_logits(hf_model, ids), **TOL)


def test_import_into_model_with_other_switches(hf_model, ids) -> None:
    kernels = Kernels(attention="explicit", fused_qkv=False, pad_vocab_multiple=64)
    ours = load_gpt2_weights(
        hf_model, model=SydsGPT(gpt2_config_to_sydsgpt(hf_model.config), kernels)
    )
    assert ours.token_embedding.weight.shape[0] == 128
    assert ours(ids).shape[-1] == VOCAB
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf_model, ids), **TOL)


def test_import_untied_head() -> None:
    hf = random_gpt2(tie_word_embeddings=False)
    assert hf.lm_head.weight is not hf.transformer.wte.weight
    ours = load_gpt2_weights(hf)
    assert not ours.config.tie_weights
    ids = torch.randint(0, VOCAB, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf, ids), **TOL)
    tied = SydsGPT({**gpt2_config_to_sydsgpt(hf.config), "tie_weights": True})
    with pytest.raises(ValueError, match="untied head"):
        load_gpt2_weights(hf.state_dict(), model=tied)


def test_import_rejects_mismatched_model(hf_model) -> None:
    wrong = SydsGPT({**gpt2_config_to_sydsgpt(hf_model.config), "num_layers": 3})
    with pytest.raises(ValueError, match="num_layers"):
        load_gpt2_weights(hf_model, model=wrong)
    no_bias = SydsGPT({**gpt2_config_to_sydsgpt(hf_model.config), "qkv_bias": False})
    with pytest.raises(ValueError, match="non-zero .*weight_query.bias"):
        load_gpt2_weights(hf_model.state_dict(), model=no_bias)


def test_state_dict_mapping_errors(hf_model) -> None:
    state = dict(hf_model.state_dict())
    with pytest.raises(ValueError, match="no tensor 'h.2.ln_1.weight'"):
        gpt2_to_sydsgpt_state_dict(state, num_layers=3)
    with pytest.raises(ValueError, match="no place for: \\['h.1.attn.c_attn.bias'"):
        gpt2_to_sydsgpt_state_dict(state, num_layers=1)
    del state["transformer.h.0.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match="no tensor 'h.0.mlp.c_fc.bias'"):
        gpt2_to_sydsgpt_state_dict(state, num_layers=2)


def test_conv1d_transpose_and_qkv_split(hf_model) -> None:
    ours = load_gpt2_weights(hf_model)
    c_attn = hf_model.transformer.h[1].attn.c_attn.weight  # (d, 3d)
    d = SMALL["n_embd"]
    attention = ours.transformer_blocks[1].attention
    assert torch.equal(attention.weight_key.weight, c_attn[:, d : 2 * d].t())
    assert torch.equal(
        attention.weight_value.bias, hf_model.transformer.h[1].attn.c_attn.bias[2 * d :]
    )
    assert torch.equal(
        ours.transformer_blocks[0].feed_forward.layers[0].weight,
        hf_model.transformer.h[0].mlp.c_fc.weight.t(),
    )


@pytest.mark.slow
def test_import_at_real_gpt2_small_size() -> None:
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    ours = load_gpt2_weights(hf)
    assert sum(p.numel() for p in ours.parameters()) == 124_439_808
    ids = torch.randint(0, 50257, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf, ids), **TOL)
        assert torch.equal(ours(ids)[0, -1].argmax(), hf_logits(hf, ids)[0, -1].argmax())


# ------------------------------------------------------------------------- export


def test_export_loads_in_transformers(hf_model, ids, tmp_path) -> None:
    ours = load_gpt2_weights(hf_model)
    export_gpt2_weights(ours, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert_same_model(ours, reloaded, ids)
    again = load_gpt2_weights(tmp_path / "out")
    for name, tensor in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


@pytest.mark.parametrize(("overrides", "pad"), [({"qkv_bias": False}, 1), ({}, 64)])
def test_export_book_style_models(overrides, pad, ids, tmp_path) -> None:
    """No query/key/value bias exports as zero bias; vocabulary padding is dropped."""
    torch.manual_seed(2)
    config = tiny_config(
        vocab_size=VOCAB,
        embedding_dim=32,
        context_length=24,
        num_heads=2,
        tie_weights=True,
        **overrides,
    )
    ours = SydsGPT(config, Kernels(pad_vocab_multiple=pad)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export_gpt2_weights(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] is None
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert reloaded.transformer.wte.weight.shape == (VOCAB, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(reloaded, ids), **TOL)


@pytest.mark.parametrize("pad", [1, 64])
def test_export_untied_head_loads_in_transformers(pad, ids, tmp_path) -> None:
    """tie_weights=False exports as tie_word_embeddings=False:
    transformers keeps our separate head."""
    torch.manual_seed(3)
    config = tiny_config(vocab_size=VOCAB, embedding_dim=32, context_length=24, num_heads=2)
    ours = SydsGPT(config, Kernels(pad_vocab_multiple=pad)).eval()
    with torch.no_grad():
        ours.output_projection.weight.add_(
            torch.randn_like(ours.output_projection.weight)
        )  # far from the embedding
    export_gpt2_weights(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight.data_ptr() != reloaded.transformer.wte.weight.data_ptr()
    assert torch.equal(reloaded.lm_head.weight, ours.output_projection.weight[:VOCAB])
    assert_same_model(ours, reloaded, ids)
    again = load_gpt2_weights(tmp_path)  # and back: the same untied model
    assert not again.config.tie_weights
    assert torch.equal(
        again.output_projection.weight[:VOCAB], ours.output_projection.weight[:VOCAB]
    )


def test_import_shape_errors_name_the_hugging_face_tensor(hf_model) -> None:
    state = dict(hf_model.state_dict())
    state["transformer.h.1.attn.c_attn.weight"] = torch.zeros(48, 96)
    with pytest.raises(
        ValueError,
        match=r"transformer\.h\.1\.attn\.c_attn\.weight has shape \(48, 96\), this model needs "
        r"\(48, 144\)",
    ):
        load_gpt2_weights(state, config=hf_model.config.to_dict())
    bigger = SydsGPT({**gpt2_config_to_sydsgpt(hf_model.config), "context_length": 64})
    with pytest.raises(
        ValueError, match=r"wpe\.weight has shape \(32, 48\), this model needs \(64, 48\)"
    ):
        load_gpt2_weights(hf_model.state_dict(), model=bigger)


# ------------------------------------------------------------------------- configs


def test_config_conversion_both_ways(hf_model) -> None:
    ours = gpt2_config_to_sydsgpt(hf_model.config.to_dict())
    assert ours == {
        "vocab_size": VOCAB,
        "embedding_dim": 48,
        "num_layers": 2,
        "num_heads": 4,
        "context_length": 32,
        "dropout": 0.1,
        "qkv_bias": True,
        "tie_weights": True,
    }
    back = sydsgpt_config_to_gpt2(ours)
    for key in (
        "vocab_size",
        "n_positions",
        "n_embd",
        "n_layer",
        "n_head",
        "resid_pdrop",
        "activation_function",
    ):
        assert back[key] == hf_model.config.to_dict()[key], key
    assert sydsgpt_config_to_gpt2({**ours, "vocab_size": 50257})["eos_token_id"] == 50256
    assert (
        gpt2_config_to_sydsgpt(
            {"n_ctx": 16, **{k: SMALL[k] for k in ("vocab_size", "n_embd", "n_layer", "n_head")}}
        )["context_length"]
        == 16
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation_function": "relu"}, "activation_function='relu'"),
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon=1e-06"),
        ({"n_inner": 100}, "n_inner=100"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"add_cross_attention": True}, "add_cross_attention=True"),
        ({"model_type": "llama"}, "model_type 'llama'"),
        ({"n_head": 5}, "divisible"),
    ],
)
def test_unsupported_gpt2_configs(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gpt2_config_to_sydsgpt({**SMALL, **change})


def test_config_missing_sizes_and_mixed_dropouts() -> None:
    with pytest.raises(ValueError, match="missing \\['n_layer'\\]"):
        gpt2_config_to_sydsgpt({k: v for k, v in SMALL.items() if k != "n_layer"})
    with pytest.warns(UserWarning, match="different dropout rates"):
        assert (
            gpt2_config_to_sydsgpt({**SMALL, "attn_pdrop": 0.0, "resid_pdrop": 0.2})["dropout"]
            == 0.2
        )


# ------------------------------------------------------------------------- sources and the Hub


def test_hub_name_downloads_through_the_one_hub_downloader(
    hf_model, ids, tmp_path, monkeypatch
) -> None:
    """Offline stand-in for the Hub: a repository with only pytorch_model.bin (older GPT-2
    uploads) is fetched with it, and every file is checked against the published sha256."""
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(hf_model.config.to_json_string())
    fake_hub(monkeypatch, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            load_gpt2_weights("openai-community/gpt2")(ids), hf_logits(hf_model, ids), **TOL
        )
    fake_hub(monkeypatch, tmp_path, sha_override={"pytorch_model.bin": "f" * 64})
    with pytest.raises(ValueError, match="pytorch_model.bin has sha256"):
        load_gpt2_weights("gpt2")


def test_hub_offline_error_says_what_to_do(tmp_path, monkeypatch) -> None:
    (tmp_path / "config.json").write_text("{}")
    fake_hub(monkeypatch, tmp_path, fail=OSError("We couldn't connect to 'https://huggingface.co'"))
    with pytest.raises(
        RuntimeError, match="config.json, model.safetensors .*pytorch_model.bin.*folder"
    ) as info:
        load_gpt2_weights("gpt2")
    assert "https://huggingface.co/gpt2" in str(info.value) and "couldn't connect" in str(
        info.value
    )
    assert "load_gpt2_weights('path/to/folder')" in str(info.value)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="pip install huggingface_hub.*config.json"):
        load_gpt2_weights("gpt2")


def test_bad_local_sources(tmp_path) -> None:
    for missing in (tmp_path / "missing", "missing-weights.safetensors"):  # not Hub names
        with pytest.raises(FileNotFoundError, match="no folder or file"):
            load_gpt2_weights(missing)
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(
        ValueError, match="notes.txt is not a weights file .*a Hub name such as 'gpt2'"
    ):
        load_gpt2_weights(tmp_path / "notes.txt")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError,
        match="must hold config.json and one of .*model.safetensors.*found \\['config.json', "
        "'notes.txt'\\]",
    ):
        load_gpt2_weights(tmp_path)
    with pytest.raises(TypeError, match="source must be"):
        load_gpt2_weights(42)
