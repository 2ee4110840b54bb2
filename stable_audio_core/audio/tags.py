"""Metadata saved with written audio: FLAC Vorbis comments, else a sidecar JSON (<file>.json).

Used by the node pack's SaveAudio (ComfyUI's own SaveAudio stores `prompt` and `workflow` as FLAC
tags, and its frontend loads the workflow back from a dropped FLAC; we write the same tags) and by
`stable-audio-toolkit generate` (the prompt and the settings that reproduce the file).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ..atomic_files import write_bytes
from ..errors import AudioFileError

_STREAMINFO, _VORBIS_COMMENT = 0, 4
_MAX_BLOCK = (1 << 24) - 1  # a FLAC metadata block length is 24 bits


def _flac_blocks(data: bytes, path: Path) -> tuple[list[tuple[int, bytes]], bytes]:
    """FLAC bytes -> ([(block type, body)], audio frames)."""
    if data[:4] != b"fLaC":
        raise AudioFileError(f"{path} is not a FLAC file")
    blocks, pos, last = [], 4, False
    while not last:
        header = data[pos]
        last, kind = bool(header & 0x80), header & 0x7F
        length = int.from_bytes(data[pos + 1:pos + 4], "big")
        blocks.append((kind, data[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return blocks, data[pos:]


def _vorbis_comment(tags: dict[str, str], vendor: bytes = b"stable-audio") -> bytes:
    entries = [f"{key}={value}".encode("utf-8") for key, value in tags.items()]
    body = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(entries))
    return body + b"".join(struct.pack("<I", len(e)) + e for e in entries)


def write_flac_tags(path: Path, tags: dict[str, str]) -> None:
    """Replace the Vorbis comments of a FLAC file with `tags`, atomically (temp file + rename)."""
    write_bytes(path, flac_with_tags(path, tags))


def flac_with_tags(path: Path, tags: dict[str, str]) -> bytes:
    """The bytes of the FLAC file `path` with its Vorbis comments replaced by `tags`."""
    path = Path(path)
    blocks, frames = _flac_blocks(path.read_bytes(), path)
    comment = _vorbis_comment(tags)
    if len(comment) > _MAX_BLOCK:
        raise AudioFileError(f"metadata of {len(comment)} bytes does not fit a FLAC block")
    kept = [b for b in blocks if b[0] != _VORBIS_COMMENT]
    kept.insert(1 if kept and kept[0][0] == _STREAMINFO else 0, (_VORBIS_COMMENT, comment))
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(kept):
        out.append(kind | (0x80 if i == len(kept) - 1 else 0))
        out += len(body).to_bytes(3, "big") + body
    out += frames
    return bytes(out)


def read_flac_tags(path: Path) -> dict[str, str]:
    """The Vorbis comments of a FLAC file as {key: value}."""
    blocks, _ = _flac_blocks(Path(path).read_bytes(), Path(path))
    tags = {}
    for kind, body in blocks:
        if kind != _VORBIS_COMMENT:
            continue
        pos = 4 + struct.unpack_from("<I", body, 0)[0]
        count = struct.unpack_from("<I", body, pos)[0]
        pos += 4
        for _ in range(count):
            size = struct.unpack_from("<I", body, pos)[0]
            key, _, value = body[pos + 4:pos + 4 + size].decode("utf-8").partition("=")
            tags[key] = value
            pos += 4 + size
    return tags


def write_sidecar(path: Path, tags: dict[str, str]) -> Path:
    """<audio file>.json holding the tags (each JSON text parsed back to an object)."""
    sidecar = Path(path).with_suffix(Path(path).suffix + ".json")
    content = {key: _parse(value) for key, value in tags.items()}
    write_bytes(sidecar, json.dumps(content, indent=1).encode("utf-8"))
    return sidecar


def _parse(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value

