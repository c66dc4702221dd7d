"""Reading an artifact folder: its manifest and library, checked before anything runs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShieldError

MANIFEST = "manifest.json"


@dataclass
class Artifact:
    """A compiled model on disk: DIR/manifest.json plus the library it names."""

    path: Path
    manifest: dict

    @property
    def library(self) -> Path:
        return self.path / self.manifest["library"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def stochastic(self) -> bool:
        """A shielded artifact with MC dropout: entry functions mc_T{T}(x, rng)."""
        return bool((self.manifest.get("shield") or {}).get("stochastic"))

    @property
    def t_values(self) -> list[int]:
        """The T this artifact was built for ([1] for a deterministic one)."""
        return sorted(f["T"] for f in self.manifest.get("functions", {"main": {"T": 1}}).values())

    def mc_function(self, T: int) -> str:
        """The entry function for T passes, or a one-line error listing the T that exist."""
        name = f"mc_T{int(T)}"
        if name not in self.manifest.get("functions", {}):
            raise ShieldError(f"this artifact has no T={T} (TVM needs static shapes; it was built for "
                              f"T in {self.t_values})", "pick one of those, or recompile with 'T=...' in --shield")
        return name

    def verified_library(self) -> tuple[bytes, str]:
        """The library's bytes and their SHA-256, after checking them against the manifest.

        The file is read once, and what was hashed is what the caller loads or uploads, so a library
        replaced between the check and its use cannot slip through.

        Raises
        ------
        ShieldError
            The library cannot be read, the manifest records no ``library_sha256``, or the file's
            hash differs from it (cut short, corrupted, or replaced after compiling).
        """
        try:
            data = self.library.read_bytes()
        except OSError as e:
            raise ShieldError(f"cannot read the library {self.library} ({e.strerror or e})",
                              "recompile with 'shield compile'") from None
        digest = hashlib.sha256(data).hexdigest()
        want = self.manifest.get("library_sha256")
        if not want:
            raise ShieldError(f"library {self.library} does not match its manifest: the manifest records no "
                              "library_sha256", "recompile with 'shield compile'")
        if digest != want:
            raise ShieldError(f"library {self.library} does not match its manifest (SHA-256 {digest[:12]}..., "
                              f"manifest {str(want)[:12]}...): it is damaged or was replaced",
                              "recompile with 'shield compile'")
        return data, digest


def load_artifact(path) -> Artifact:
    """Open an artifact folder written by 'shield compile'."""
    path = Path(path)
    if not path.is_dir():
        raise ShieldError(f"artifact folder {path} not found", "create one with 'shield compile CHECKPOINT -o DIR'")
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
        manifest["library"], manifest["input"]["shape"], manifest["classes"]  # noqa: B018 - required keys
    except FileNotFoundError:
        raise ShieldError(f"{path} has no {MANIFEST}: not an artifact", "create one with 'shield compile'") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ShieldError(f"{mpath} is malformed ({type(e).__name__}: {e})", "recompile with 'shield compile'") from None
    art = Artifact(path, manifest)
    if not art.library.exists():
        raise ShieldError(f"artifact {path} lacks its library {manifest['library']}", "recompile with 'shield compile'")
    return art
