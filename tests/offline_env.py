"""pytest plugin (loaded by pyproject's addopts, so it also applies when pytest is given
only notebooks): point the data and tiktoken caches at ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

if (SHARED / "data").is_dir():
    os.environ.setdefault("SYDSGPT_DATA_DIR", str(SHARED / "data"))
if (SHARED / "tiktoken-cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
