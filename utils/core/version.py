"""The code a checkpoint or a result was made with: the git commit and whether the tree differed from it, or,
outside a git checkout, a digest of the project's Python source (airbench keeps its source with its results for
the same reason)."""
import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("attacks", "augment", "benchmarks", "experiments", "losses", "models", "utils")


@lru_cache(maxsize=1)
def code_version() -> dict:
    """{"commit": sha1, "dirty": bool} in a git checkout, else {"source_sha1": digest of every .py file}."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"source_sha1": source_digest()}


def _git(*args) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def source_digest() -> str:
    """sha1 over the project's .py files (the entry scripts and its packages), by relative path and bytes."""
    digest = hashlib.sha1()
    paths = [*ROOT.glob("*.py"), *(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))]
    for path in sorted(paths):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def version_words(version: dict | None) -> str:
    """'3a8f70e' or '3a8f70e+changes' or 'source 1b2c3d4e5f60'; '?' where nothing was recorded."""
    if not version:
        return "?"
    if "commit" in version:
        return version["commit"][:7] + ("+changes" if version.get("dirty") else "")
    return f"source {version['source_sha1'][:12]}"
