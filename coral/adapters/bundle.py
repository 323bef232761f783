"""An adapter as one value: what travels between nodes (through Ray's object store).

A trained peft adapter is two small files (`adapter_config.json`, `adapter_model.safetensors`)
plus CORAL's metadata (`coral.json`: genes, base model, data version, loss, and the checksum
of the two files). `AdapterBundle` holds all three in memory, so a training actor can return
it as a task result, the cache can persist it once, and a generation actor on any node can
write it into its own local directory and check it against the checksum of its `AdapterRef`
before loading it: no file system has to be shared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from coral.messages import AdapterRef

META_FILE = "coral.json"
# What a generator needs to load the adapter; the checksum covers exactly these.
WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterCorrupt(ValueError):
    """An adapter's weights do not match its checksum (a partial or altered copy)."""


def checksum_parts(parts: Iterable[tuple[str, Iterable[bytes]]]) -> str:
    """sha256 over (file name, content chunks) pairs, in WEIGHT_FILES order."""
    digest = hashlib.sha256()
    for name, chunks in parts:
        digest.update(name.encode() + b"\0")
        for chunk in chunks:
            digest.update(chunk)
    return digest.hexdigest()


def checksum_files(files: Mapping[str, bytes]) -> str:
    """The checksum of in-memory weight files (KeyError if one is missing)."""
    return checksum_parts((name, [files[name]]) for name in WEIGHT_FILES)


def checksum_dir(folder: Path) -> str:
    """The same checksum over a folder's weight files; FileNotFoundError if one is missing."""
    def chunks(path: Path) -> Iterable[bytes]:
        with open(path, "rb") as fh:
            yield from iter(lambda: fh.read(1 << 20), b"")
    return checksum_parts((name, chunks(Path(folder) / name)) for name in WEIGHT_FILES)


@dataclass(frozen=True)
class AdapterBundle:
    """One adapter's weight files and metadata (`meta["checksum"]` covers the files)."""

    key: str
    files: Mapping[str, bytes] = field(repr=False)
    meta: Mapping

    @classmethod
    def from_dir(cls, key: str, folder: Path, meta: Mapping) -> "AdapterBundle":
        """Read a saved peft adapter (`save_pretrained` output) and stamp key and checksum."""
        files = {name: (Path(folder) / name).read_bytes() for name in WEIGHT_FILES}
        return cls(key, files, dict(meta, key=key, checksum=checksum_files(files)))

    @property
    def checksum(self) -> str:
        """The recorded checksum of the weight files."""
        return str(self.meta["checksum"])

    @property
    def nbytes(self) -> int:
        """Size of the weight files."""
        return sum(len(b) for b in self.files.values())

    def verify(self) -> bool:
        """Whether the files are complete and match the recorded checksum."""
        try:
            return checksum_files(self.files) == self.checksum
        except KeyError:
            return False

    def check(self, ref: AdapterRef) -> "AdapterBundle":
        """This bundle if it is the adapter `ref` names, intact; AdapterCorrupt otherwise."""
        if self.key != ref.key or self.checksum != ref.checksum or not self.verify():
            raise AdapterCorrupt(f"adapter {ref.key[:12]}: the copy received does not match "
                                 f"its checksum {ref.checksum[:12]}")
        return self

    def write_into(self, folder: Path) -> None:
        """Write the weight files and coral.json (last, so its presence means complete)."""
        folder = Path(folder)
        for name in WEIGHT_FILES:
            (folder / name).write_bytes(self.files[name])
        (folder / META_FILE).write_text(json.dumps(dict(self.meta), indent=2, sort_keys=True))
