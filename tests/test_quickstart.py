"""The original SydsGPT-Pretraining quickstart runs unchanged except for its import line."""

from __future__ import annotations

import subprocess
import sys

import pytest

# The original README's script; only the import line differs (it was
# `from model.SydsGPT import SydsGPT` and `from modules.GenerateSimple import generate_simple`).
QUICKSTART = """
import torch
import tiktoken
from sydsgpt import SydsGPT, generate_simple
config = {"vocab_size": 50257, "embedding_dim": 256, "context_length": 128, "num_layers": 4,
          "num_heads": 4, "dropout": 0.1, "qkv_bias": False}
enc = tiktoken.get_encoding("gpt2")
prompt = "Once upon a time"
input_ids = torch.tensor([enc.encode(prompt)], dtype=torch.long)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = SydsGPT(config).to(device).eval()
max_new_tokens = 100
context_len = config["context_length"]
with torch.no_grad():
    generated = generate_simple(model, input_ids.to(device), max_new_tokens, context_len)
print(enc.decode(generated[0].tolist()))
"""


@pytest.mark.slow
def test_original_quickstart_prints_generated_text(repo_root) -> None:
    # TIKTOKEN_CACHE_DIR (set by conftest.py) is inherited, so this runs offline.
    result = subprocess.run(
        [sys.executable, "-c", QUICKSTART],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.rstrip("\n")
    assert text.startswith("Once upon a time"), text[:200]
    # 100 new tokens: the untrained model's text re-encodes to about 104 tokens
    import tiktoken

    assert len(tiktoken.get_encoding("gpt2").encode(text)) > 50
