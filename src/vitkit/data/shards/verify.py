"""`vitkit data verify`: every shard is there, of the recorded size and sha256, holding the samples its index says.

Each shard is read once, whole (local files or fsspec URLs): its sha256 is compared with the index, its tar
headers are read back and every image member must sit at the byte offset and size of the sample table, with
a `.cls` member for each. `decode=True` also decodes every image and counts those that would be replaced
while training.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

import numpy as np

from vitkit.data.decode import BadImageError, decode_bytes
from vitkit.data.shards.format import ShardInfo, join, read_bytes, read_index
from vitkit.errors import MissingPathError


@dataclass
class VerifyReport:
    """What `verify` found: samples and shards checked per split, and one line per problem."""

    samples: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # with decode=True: samples that do not decode

    @property
    def ok(self) -> bool:
        """No missing, truncated, changed or inconsistent shard (undecodable samples are reported, not failures)."""
        return not self.problems


def verify(root: str, *, decode: bool = False) -> VerifyReport:
    """Check the shard directory (or URL) `root` against its index; see the module docstring."""
    index, tables, _ = read_index(root)
    report = VerifyReport()
    for split, entry in index.splits.items():
        table = tables[split]
        report.samples[split], report.shards[split] = len(table["label"]), len(entry.shards)
        for number, shard in enumerate(entry.shards):
            rows = np.flatnonzero(table["shard"] == number)
            report.problems += check_shard(root, shard, table, rows, report.undecodable if decode else None)
    return report


def check_shard(root: str, shard: ShardInfo, table: dict[str, np.ndarray], rows: np.ndarray, bad: list | None) -> list:
    """The problems of one shard (empty when it matches the index); undecodable samples appended to `bad`."""
    import hashlib

    path = join(root, shard.name)
    try:
        data = read_bytes(path)
    except MissingPathError:
        return [f"{path}: missing"]
    problems = []
    if len(data) != shard.bytes:
        what = "truncated" if len(data) < shard.bytes else "longer than packed"
        problems.append(f"{path}: {what}: {len(data)} bytes, the index records {shard.bytes}")
    elif hashlib.sha256(data).hexdigest() != shard.sha256:
        problems.append(f"{path}: sha256 differs from the index (the shard changed after packing)")
    try:
        images, labels = _members(data)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        return [*problems, f"{path}: not a readable tar file ({error})"]
    if len(rows) != shard.samples or len(images) != shard.samples:
        problems.append(f"{path}: {len(images)} image members, the index counts {shard.samples} ({len(rows)} rows)")
    expected = {(int(table["offset"][r]), int(table["size"][r])): int(table["label"][r]) for r in rows}
    found = {(offset, size): labels.get(key) for key, (offset, size) in images.items()}
    if found != expected:
        wrong = len(set(found.items()) ^ set(expected.items()))
        problems.append(f"{path}: {wrong} sample(s) differ from the table (offset, size or class)")
    if bad is not None:
        for row in rows:
            offset, size = int(table["offset"][row]), int(table["size"][row])
            try:
                decode_bytes(data[offset : offset + size])
            except BadImageError as error:
                bad.append(f"{shard.name}:{table['path'][row]}: {error}")
    return problems


def _members(data: bytes) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """{key: (offset, size)} of the image members and {key: class} of the .cls members of a tar held in memory."""
    images, labels = {}, {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            if not member.isfile():
                continue
            key, _, extension = member.name.partition(".")
            if extension == "cls":
                labels[key] = int(archive.extractfile(member).read().decode().strip())
            else:
                images[key] = (member.offset_data, member.size)
    return images, labels
