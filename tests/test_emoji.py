"""The emoji style domains and their text modality: loaders, the split by emoji, licences."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmm_fed.data import load_domain, to_tensors
from dmm_fed.data.emoji import (
    CLASSES,
    DOMAIN_SOURCES,
    EMOJI_DOMAINS,
    Emoji,
    load_catalogue,
    render,
    slugify,
    split_by_emoji,
)
from dmm_fed.data.text import TEXT_DIM, embed


def test_slugify_matches_fluent_file_names():
    assert slugify("flag: Egypt") == "flag-egypt"
    assert slugify("1st place medal") == "1st-place-medal"
    assert slugify("keycap: #") == "keycap"


def test_split_by_emoji_is_stratified_and_fixed():
    emojis = [Emoji(f"U{i}", f"e{i}", (f"e{i}",), CLASSES[i % 2], "", "", "") for i in range(20)]
    first, again = split_by_emoji(emojis, 0.2, seed=3), split_by_emoji(emojis, 0.2, seed=3)
    assert [e.split for e in first] == [e.split for e in again]
    for category in CLASSES[:2]:
        splits = [e.split for e in first if e.category == category]
        assert splits.count("test") == 2 and splits.count("train") == 8
    assert {e.split for e in split_by_emoji(emojis[:1], 0.2, seed=0)} == {"test"}  # >= 1 test


def test_render_composites_svg_and_png_on_white():
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           b'<rect x="0" y="0" width="5" height="10" fill="#ff0000"/></svg>')
    img = render(svg, svg=True)
    assert img.shape == (3, 28, 28) and img.dtype == np.uint8
    assert tuple(img[:, 14, 3]) == (255, 0, 0) and tuple(img[:, 14, 24]) == (255, 255, 255)
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 255, 0)).save(buffer, format="PNG")  # transparent
    assert (render(buffer.getvalue(), svg=False) == 255).all()


def test_split_is_by_emoji_and_the_same_in_every_domain(data_root: Path):
    meta = load_catalogue(data_root)
    emojis = meta["emoji"]
    assert meta["classes"] == list(CLASSES)
    test_ids = {e["unified"] for e in emojis if e["split"] == "test"}
    train_ids = {e["unified"] for e in emojis if e["split"] == "train"}
    assert not test_ids & train_ids and len(test_ids) == 243 and len(train_ids) == 971
    y_test = [CLASSES.index(e["category"]) for e in emojis if e["split"] == "test"]
    for domain in EMOJI_DOMAINS:
        test = load_domain(domain, "test", data_root)
        assert np.array_equal(test.y, y_test)  # row i of every domain is the same emoji
    # the styles really differ: mean image distance between vendors for the same emoji
    twitter, black = (load_domain(d, "test", data_root).x.astype(float)
                      for d in ("emoji-twitter", "emoji-openmoji-black"))
    assert np.abs(twitter - black).mean() > 20


def test_licence_metadata_is_recorded_for_every_domain(data_root: Path):
    sources = load_catalogue(data_root)["sources"]
    assert set(sources) == set(EMOJI_DOMAINS) == set(DOMAIN_SOURCES)
    for domain, source in sources.items():
        assert source["licence"] and source["package"] and source["version"], domain
    assert sources["emoji-openmoji"]["licence"] == "CC-BY-SA-4.0"
    assert sources["emoji-twitter"]["licence"].startswith("CC-BY-4.0")


def test_text_embeddings_are_aligned_unit_vectors(data_root: Path):
    split = load_domain("emoji-google", "train", data_root, text=True)
    assert split.text.shape == (len(split), TEXT_DIM) and split.text.dtype == np.float32
    assert np.allclose(np.linalg.norm(split.text, axis=1), 1.0, atol=1e-5)
    # the cache holds what the encoder gives for each emoji's own text, in row order
    texts = [Emoji(**{**e, "short_names": tuple(e["short_names"])}).text
             for e in load_catalogue(data_root)["emoji"] if e["split"] == "train"][:4]
    assert np.allclose(embed(texts), split.text[:4], atol=1e-5)
    x, y = to_tensors(split, np.arange(5))
    assert np.array_equal(y.numpy(), split.y[:5])
    assert x.shape == (5, 3 * 28 * 28 + TEXT_DIM)
    assert np.allclose(x[:, -TEXT_DIM:].numpy(), split.text[:5])
    with pytest.raises(ValueError, match="has no text"):
        load_domain("mnist", "test", data_root, text=True)


def test_the_image_text_benchmark_needs_the_text_embeddings(data_root: Path, tmp_path: Path):
    import shutil

    from dmm_fed.data.text import text_path
    from simulations.benchmarks import BENCHMARKS

    shutil.copytree(data_root / "emoji", tmp_path / "emoji")
    text_path(tmp_path).unlink()
    assert BENCHMARKS["emoji"].missing_data(tmp_path) is None
    reason = BENCHMARKS["emoji-mm"].missing_data(tmp_path)
    assert reason is not None and "emoji text embeddings not found" in reason
    assert "--domains emoji" in reason
