"""Llama 3 and Qwen3 weights: import from and export to the Hugging Face format, proved
against ``transformers`` (``LlamaForCausalLM``, ``Qwen3ForCausalLM``) with random seeded
weights, offline; parameter counts of the real shapes; the download path on local files."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import fake_hub, hf_logits

from sydsgpt.generate import generate
from sydsgpt.hf_weights import (
    export_hf_weights,
    hf_config_to_sydsgpt,
    hf_name_to_ours,
    load_hf_tokenizer,
    load_hf_weights,
    our_name_to_hf,
    sydsgpt_config_to_hf,
)
from sydsgpt.files import file_sha256
from sydsgpt.hub import download_hf_model, verify_files
from sydsgpt.config import Kernels
from sydsgpt.model import SydsGPT, SydsGPTConfig, count_parameters
from sydsgpt.presets import get_preset

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

VOCAB = 97
SMALL = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 112,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
TOL = {"atol": 1e-4, "rtol": 0.0}
VARIANTS = {
    # family, config overrides: each variant exercises a different part of the mapping.
    "llama": ("llama", {"rope_theta": 500000.0}),
    "llama-scaled-untied": (
        "llama",
        {"rope_theta": 500000.0, "rope_scaling": LLAMA3_SCALING, "tie_word_embeddings": False},
    ),
    "llama-bias-mqa": (
        "llama",
        {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1},
    ),
    "qwen3": ("qwen3", {"head_dim": 32, "rope_theta": 1000000.0, "tie_word_embeddings": True}),
}


def random_hf(variant: str, seed: int = 0):
    """A transformers model with random weights; norms
    perturbed too, so a mix-up of any two tensors shows."""
    family, overrides = VARIANTS[variant]
    config_class = transformers.LlamaConfig if family == "llama" else transformers.Qwen3Config
    model_class = (
        transformers.LlamaForCausalLM if family == "llama" else transformers.Qwen3ForCausalLM
    )
    torch.manual_seed(seed)
    model = model_class(config_class(**{**SMALL, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request):
    hf = random_hf(request.param)
    return request.param, hf, load_hf_weights(hf)


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))


def hf_greedy(model, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> torch.Tensor:
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        use_cache=use_cache,
        pad_token_id=0,
    )


# ------------------------------------------------------------------------- import


def test_imported_logits_match(pair, ids) -> None:
    variant, hf, ours = pair
    assert not ours.training and ours.config.positions == "rope" and ours.config.norm == "rmsnorm"
    assert ours.config.qk_norm == (variant == "qwen3")
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf, ids), **TOL)


def test_greedy_tokens_match_with_and_without_cache(pair, ids) -> None:
    _, hf, ours = pair
    prompt = ids[:1, :7]
    theirs = hf_greedy(hf, prompt, 12, use_cache=True)
    assert torch.equal(hf_greedy(hf, prompt, 12, use_cache=False), theirs)
    for use_cache in (True, False):
        for preallocate in (True, False):
            mine = generate(ours, prompt, 12, use_cache=use_cache, preallocate=preallocate)
            assert torch.equal(mine, theirs), (use_cache, preallocate)


def test_cached_logits_match_uncached_step_by_step(pair, ids) -> None:
    """Prefill 10 tokens, then feed one token at a
    time: each step's logits equal the full pass's."""
    _, _, ours = pair
    full = ours(ids[:, :16])
    cache = ours.make_kv_cache()
    steps = [ours(ids[:, :10], kv_cache=cache)] + [
        ours(ids[:, t : t + 1], kv_cache=cache) for t in range(10, 16)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_import_from_saved_folder(pair, ids, tmp_path) -> None:
    _, hf, _ = pair
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    with torch.no_grad():
        torch.testing.assert_close(load_hf_weights(tmp_path)(ids), hf_logits(hf, ids), **TOL)


def test_import_into_model_with_other_switches(ids) -> None:
    hf = random_hf("qwen3")
    kernels = Kernels(attention="explicit", fused_qkv=False, pad_vocab_multiple=64)
    ours = load_hf_weights(hf, model=SydsGPT(hf_config_to_sydsgpt(hf.config), kernels))
    assert ours.token_embedding.weight.shape[0] == 128 and ours(ids).shape[-1] == VOCAB
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf_logits(hf, ids), **TOL)


def test_import_errors() -> None:
    hf = random_hf("llama")
    with pytest.raises(ValueError, match="num_kv_heads"):
        load_hf_weights(hf, model=SydsGPT({**hf_config_to_sydsgpt(hf.config), "num_kv_heads": 4}))
    state = dict(hf.state_dict())
    with pytest.raises(ValueError, match="pass config="):
        load_hf_weights(state)
    del state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"missing \['model.layers.1.mlp.up_proj.weight'\]"):
        load_hf_weights(state, config=hf.config.to_dict())
    with pytest.raises(ValueError, match="model_type"):
        hf_config_to_sydsgpt({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="hidden_act"):
        hf_config_to_sydsgpt({**hf.config.to_dict(), "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="rope scaling 'yarn'"):
        hf_config_to_sydsgpt(
            {**hf.config.to_dict(), "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}
        )


def test_names_map_both_ways() -> None:
    names = SydsGPT(
        get_preset("book-modern", qkv_bias=True, linear_bias=True, tie_weights=False)
    ).state_dict()
    hf_names = {our_name_to_hf(n) for n in names}
    assert "model.layers.3.self_attn.q_norm.weight" in hf_names and "lm_head.weight" in hf_names
    assert all(hf_name_to_ours(our_name_to_hf(n)) == n for n in names)


# ------------------------------------------------------------------------- export


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_loads_in_transformers_with_no_missing_keys(variant, ids, tmp_path) -> None:
    hf = random_hf(variant)
    ours = load_hf_weights(hf)
    export_hf_weights(ours, tmp_path)
    model_class = type(hf)
    back, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert back.config.tie_word_embeddings == hf.config.tie_word_embeddings
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(back.eval(), ids), hf_logits(hf, ids), **TOL)


def test_export_of_a_trained_from_scratch_model(ids, tmp_path) -> None:
    """A SydsGPT built from a preset (not imported) exports as a Qwen3 that computes our logits."""
    torch.manual_seed(0)
    ours = SydsGPT(
        get_preset("book-modern", vocab_size=VOCAB, embedding_dim=64, num_layers=2, dropout=0.0)
    ).eval()
    export_hf_weights(ours, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen3"
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_logits(back, ids), ours(ids), **TOL)


def test_export_refuses_what_the_family_cannot_express() -> None:
    with pytest.raises(ValueError, match="norm='layernorm'"):
        sydsgpt_config_to_hf(get_preset("gpt2-mini"))
    with pytest.raises(ValueError, match="qk_norm=True"):
        sydsgpt_config_to_hf(get_preset("book-modern"), family="llama")


# ------------------------------------------------------------------------- real shapes


@pytest.mark.parametrize(
    ("preset", "family", "hf_config"),
    [
        (
            "llama3.2-1b",
            "llama",
            {
                "vocab_size": 128256,
                "hidden_size": 2048,
                "intermediate_size": 8192,
                "num_hidden_layers": 16,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "head_dim": 64,
                "max_position_embeddings": 131072,
                "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0,
                "tie_word_embeddings": True,
                "rope_scaling": {
                    **LLAMA3_SCALING,
                    "factor": 32.0,
                    "original_max_position_embeddings": 8192,
                },
            },
        ),
        (
            "qwen3-0.6b",
            "qwen3",
            {
                "vocab_size": 151936,
                "hidden_size": 1024,
                "intermediate_size": 3072,
                "num_hidden_layers": 28,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "max_position_embeddings": 40960,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "tie_word_embeddings": True,
            },
        ),
    ],
)
def test_parameter_counts_equal_transformers_for_real_shapes(preset, family, hf_config) -> None:
    config_class = transformers.LlamaConfig if family == "llama" else transformers.Qwen3Config
    model_class = (
        transformers.LlamaForCausalLM if family == "llama" else transformers.Qwen3ForCausalLM
    )
    with torch.device("meta"):
        hf = model_class(config_class(**hf_config))
        ours = SydsGPT(get_preset(preset))
    theirs = sum(p.numel() for p in hf.parameters())  # parameters() lists a tied tensor once
    assert count_parameters(ours) == theirs
    assert count_parameters(get_preset(preset)) == theirs  # the formula, without building a model
    assert SydsGPTConfig.from_dict(
        hf_config_to_sydsgpt(config_class(**hf_config))
    ) == SydsGPTConfig.from_dict(get_preset(preset))
    assert {
        k: v
        for k, v in sydsgpt_config_to_hf(get_preset(preset)).items()
        if k in hf_config and k != "rope_scaling"
    } == {k: v for k, v in hf_config.items() if k != "rope_scaling"}


# -------------------------------------------------------------------- files, the Hub, the tokenizer


def test_verify_files_catches_truncation_and_corruption(tmp_path) -> None:
    (tmp_path / "a.bin").write_bytes(b"hello weights")
    good = {"a.bin": (13, file_sha256(tmp_path / "a.bin"))}
    verify_files(tmp_path, good)
    with pytest.raises(ValueError, match="a.bin has 13 bytes, expected 14"):
        verify_files(tmp_path, {"a.bin": (14, None)})
    (tmp_path / "a.bin").write_bytes(b"hellO weights")
    with pytest.raises(ValueError, match="a.bin has sha256 .* expected"):
        verify_files(tmp_path, good)
    with pytest.raises(ValueError, match="b.bin is missing"):
        verify_files(tmp_path, {"b.bin": (None, None)})


def test_download_path_on_locally_saved_files(monkeypatch, tmp_path, ids) -> None:
    hf = random_hf("qwen3")
    hf.save_pretrained(tmp_path / "hub")
    fake_hub(monkeypatch, tmp_path / "hub")
    folder = download_hf_model("Qwen/Tiny", tmp_path / "local")
    assert (folder / "model.safetensors").is_file()
    with torch.no_grad():
        torch.testing.assert_close(load_hf_weights(folder)(ids), hf_logits(hf, ids), **TOL)


def test_download_rejects_a_corrupted_file(monkeypatch, tmp_path) -> None:
    random_hf("llama").save_pretrained(tmp_path / "hub")
    fake_hub(monkeypatch, tmp_path / "hub", sha_override={"model.safetensors": "f" * 64})
    with pytest.raises(ValueError, match="model.safetensors has sha256"):
        download_hf_model("meta-llama/Tiny", tmp_path / "local")


def test_download_offline_and_without_the_package_are_clear_errors(monkeypatch, tmp_path) -> None:
    random_hf("llama").save_pretrained(tmp_path / "hub")
    fake_hub(monkeypatch, tmp_path / "hub", fail=OSError("network is unreachable"))
    with pytest.raises(
        RuntimeError,
        match=r"failed \(OSError: network is unreachable\).*load_hf_weights\('path/to/folder'\)",
    ):
        download_hf_model("Qwen/Qwen3-0.6B")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match="pip install huggingface_hub"):
        load_hf_weights("Qwen/Qwen3-0.6B")


def test_tokenizer_json_beside_the_weights(tmp_path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(
        ["to be or not to be, that is the question"] * 20,
        trainers.BpeTrainer(
            vocab_size=300,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=["<|endoftext|>"],
        ),
    )
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = load_hf_tokenizer(tmp_path)
    ids = ours.encode("to be or not")
    assert (
        ours.decode(ids) == "to be or not"
        and len(ids) < len("to be or not")
        and ours.n_vocab == tok.get_vocab_size()
    )
    assert ours.eot_token == tok.token_to_id("<|endoftext|>") == 0
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_hf_tokenizer(tmp_path / "nowhere")
    from sydsgpt.generate import generate_text

    torch.manual_seed(0)
    model = SydsGPT(
        get_preset(
            "book-modern", vocab_size=ours.n_vocab, embedding_dim=32, num_layers=1, dropout=0.0
        )
    )
    text = generate_text(model.eval(), ours, "to be", max_new_tokens=5, stop_at_eos=False)
    assert isinstance(text, str) and text
