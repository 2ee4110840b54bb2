"""Metadata saved with written audio: tags embedded in FLAC, Ogg (Vorbis, Opus) and MP3 files,
else a sidecar JSON (<file>.json).

ComfyUI's SaveAudio stores `prompt` and `workflow` as container metadata, and its frontend loads
the workflow back from a dropped file: FLAC Vorbis comments, the comment header of an Ogg stream,
ID3v2 TXXX frames of an MP3. We write the same keys in the same places. Used by the node pack's
SaveAudio and by `stable-audio-toolkit generate` (the prompt and the settings that reproduce the
file). WAV has no tag the frontend reads: it gets the sidecar.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from ..atomic_files import write_bytes
from ..errors import AudioFileError

TAGGED_FORMATS = ("flac", "ogg", "opus", "mp3")   # formats whose files carry their own tags


def with_tags(data: bytes, tags: dict[str, str], name: str = "audio") -> bytes:
    """The bytes of a FLAC, Ogg or MP3 file with its tags replaced by `tags`."""
    if data[:4] == b"fLaC":
        return _flac_with_tags(data, tags, name)
    if data[:4] == b"OggS":
        return _ogg_with_tags(data, tags, name)
    if data[:3] == b"ID3" or (data[:1] == b"\xff" and data[1:2] >= b"\xe0"):   # MPEG frame sync
        return _id3_with_tags(data, tags)
    raise AudioFileError(f"{name}: tags are embedded in FLAC, Ogg and MP3 files only")


def read_tags(path: Path) -> dict[str, str]:
    """The tags of a FLAC, Ogg (Vorbis/Opus) or MP3 file as {key: value}."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] == b"fLaC":
        blocks, _ = _flac_blocks(data, path)
        return {k: v for kind, body in blocks if kind == _VORBIS_COMMENT
                for k, v in _parse_vorbis_comment(body)[1].items()}
    if data[:4] == b"OggS":
        packets, _, _ = _ogg_headers(data, path)
        return _parse_vorbis_comment(packets[1][len(_comment_magic(packets[0], path)):])[1]
    if data[:3] == b"ID3":
        return _read_id3(data)
    return {}


def write_tags(path: Path, tags: dict[str, str]) -> None:
    """Replace the tags of a FLAC, Ogg or MP3 file with `tags`, atomically (temp file + rename)."""
    path = Path(path)
    write_bytes(path, with_tags(path.read_bytes(), tags, str(path)))


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


# Vorbis comments: the tag list of FLAC, Ogg Vorbis and Opus (RFC 7845 section 5.2).

def _vorbis_comment(tags: dict[str, str], vendor: bytes = b"stable-audio") -> bytes:
    entries = [f"{key}={value}".encode("utf-8") for key, value in tags.items()]
    body = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(entries))
    return body + b"".join(struct.pack("<I", len(e)) + e for e in entries)


def _parse_vorbis_comment(body: bytes) -> tuple[bytes, dict[str, str]]:
    """Vorbis comment bytes -> (vendor, {key: value})."""
    size = struct.unpack_from("<I", body, 0)[0]
    vendor, pos = body[4:4 + size], 4 + size
    count = struct.unpack_from("<I", body, pos)[0]
    pos += 4
    tags = {}
    for _ in range(count):
        size = struct.unpack_from("<I", body, pos)[0]
        key, _, value = body[pos + 4:pos + 4 + size].decode("utf-8").partition("=")
        tags[key] = value
        pos += 4 + size
    return vendor, tags


# FLAC: metadata blocks before the frames; the Vorbis comment is block type 4.

_STREAMINFO, _VORBIS_COMMENT = 0, 4
_MAX_BLOCK = (1 << 24) - 1  # a FLAC metadata block length is 24 bits


def _flac_blocks(data: bytes, path) -> tuple[list[tuple[int, bytes]], bytes]:
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


def _flac_with_tags(data: bytes, tags: dict[str, str], name: str) -> bytes:
    blocks, frames = _flac_blocks(data, name)
    comment = _vorbis_comment(tags)
    if len(comment) > _MAX_BLOCK:
        raise AudioFileError(f"metadata of {len(comment)} bytes does not fit a FLAC block")
    kept = [b for b in blocks if b[0] != _VORBIS_COMMENT]
    kept.insert(1 if kept and kept[0][0] == _STREAMINFO else 0, (_VORBIS_COMMENT, comment))
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(kept):
        out.append(kind | (0x80 if i == len(kept) - 1 else 0))
        out += len(body).to_bytes(3, "big") + body
    return bytes(out + frames)


# Ogg (RFC 3533): pages of lacing-value segments. The codec's header packets come first (Vorbis:
# identification, comment, setup; Opus: OpusHead, OpusTags) and the audio starts on a fresh page,
# so the comment packet is replaced by re-paging the headers and renumbering the pages after them.

_OGG_PAGE = struct.Struct("<4sBBqIIIB")   # capture, version, flags, granule, serial, seq, crc, segments
_CONTINUED, _FIRST = 0x01, 0x02
_BIT_REVERSED = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def _ogg_crc(page: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, MSB first, no inversion. zlib's
    CRC-32 is the same polynomial bit-reflected, so it runs on bit-reversed bytes."""
    reflected = ~zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) & 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _ogg_pages(data: bytes, name) -> list[tuple[int, int, int, bytes, bytes]]:
    """Ogg bytes -> [(flags, granule, serial, lacing values, body)]."""
    pages, pos = [], 0
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS" or pos + _OGG_PAGE.size > len(data):
            raise AudioFileError(f"{name}: broken Ogg page at byte {pos}")
        _, _, flags, granule, serial, _, _, count = _OGG_PAGE.unpack_from(data, pos)
        lacing = data[pos + _OGG_PAGE.size:pos + _OGG_PAGE.size + count]
        start = pos + _OGG_PAGE.size + count
        pages.append((flags, granule, serial, lacing, data[start:start + sum(lacing)]))
        pos = start + sum(lacing)
    return pages


def _ogg_page(flags: int, granule: int, serial: int, seq: int, lacing: bytes, body: bytes) -> bytes:
    page = bytearray(_OGG_PAGE.pack(b"OggS", 0, flags, granule, serial, seq, 0, len(lacing)))
    page += lacing + body
    struct.pack_into("<I", page, 22, _ogg_crc(bytes(page)))
    return bytes(page)


def _comment_magic(first_packet: bytes, name) -> bytes:
    if first_packet.startswith(b"OpusHead"):
        return b"OpusTags"
    if first_packet.startswith(b"\x01vorbis"):
        return b"\x03vorbis"
    raise AudioFileError(f"{name}: Ogg stream is neither Vorbis nor Opus")


def _ogg_headers(data: bytes, name) -> tuple[list[bytes], list, int]:
    """(header packets, all pages, index of the first audio page)."""
    pages = _ogg_pages(data, name)
    if not pages or len({serial for _, _, serial, _, _ in pages}) != 1:
        raise AudioFileError(f"{name}: expected one Ogg audio stream")
    packets, current, wanted = [], b"", None
    for index, (_, _, _, lacing, body) in enumerate(pages):
        pos = 0
        for value in lacing:
            current += body[pos:pos + value]
            pos += value
            if value < 255:
                packets.append(current)
                current = b""
                if wanted is None:
                    wanted = 2 if _comment_magic(packets[0], name) == b"OpusTags" else 3
                if len(packets) == wanted:
                    if pos != len(body):
                        raise AudioFileError(f"{name}: audio shares a page with the Ogg headers")
                    return packets, pages, index + 1
    raise AudioFileError(f"{name}: the Ogg headers are incomplete")


def _ogg_with_tags(data: bytes, tags: dict[str, str], name: str) -> bytes:
    packets, pages, first_audio = _ogg_headers(data, name)
    magic = _comment_magic(packets[0], name)
    vendor, _ = _parse_vorbis_comment(packets[1][len(magic):])
    comment = magic + _vorbis_comment(tags, vendor) + (b"\x01" if magic == b"\x03vorbis" else b"")
    serial = pages[0][2]
    # the identification packet keeps its page; RFC 7845 and the Vorbis spec put it alone there
    out = [_ogg_page(_FIRST, 0, serial, 0, *_lace([packets[0]]))]
    lacing, body = _lace([comment, *packets[2:]])
    pos = 0
    for start in range(0, len(lacing), 255):   # at most 255 segments a page
        chunk = lacing[start:start + 255]
        size = sum(chunk)
        continued = start > 0 and lacing[start - 1] == 255
        # a page on which no packet ends has granule -1; header packets end at granule 0
        granule = 0 if any(v < 255 for v in chunk) else -1
        out.append(_ogg_page(_CONTINUED if continued else 0, granule, serial, len(out), chunk,
                             body[pos:pos + size]))
        pos += size
    for flags, granule, _, lacing, body in pages[first_audio:]:
        out.append(_ogg_page(flags, granule, serial, len(out), lacing, body))
    return b"".join(out)


def _lace(packets: list[bytes]) -> tuple[bytes, bytes]:
    """Packets -> (lacing values, body): a packet of n bytes is n // 255 values of 255 and one
    of n % 255 (a 0 ends a packet whose length is a multiple of 255)."""
    lacing = b"".join(bytes([255] * (len(p) // 255) + [len(p) % 255]) for p in packets)
    return lacing, b"".join(packets)


# MP3: an ID3v2.4 tag in front of the frames, one TXXX (user text) frame per tag.

def _syncsafe(value: int) -> bytes:
    return bytes((value >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _unsyncsafe(raw: bytes) -> int:
    return (raw[0] << 21) | (raw[1] << 14) | (raw[2] << 7) | raw[3]


def _id3_size(data: bytes) -> int:
    """Length of the ID3v2 tag at the start of `data` (0 without one)."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    return 10 + _unsyncsafe(data[6:10]) + (10 if data[5] & 0x10 else 0)   # 0x10: a footer follows


def _id3_with_tags(data: bytes, tags: dict[str, str]) -> bytes:
    frames = b""
    for key, value in tags.items():
        # UTF-8 text (encoding 3), description and value each ended by a NUL as ffmpeg writes them
        body = b"\x03" + key.encode("utf-8") + b"\0" + value.encode("utf-8") + b"\0"
        frames += b"TXXX" + _syncsafe(len(body)) + b"\0\0" + body
    if len(frames) >= 1 << 28:
        raise AudioFileError(f"metadata of {len(frames)} bytes does not fit an ID3 tag")
    return b"ID3\x04\x00\x00" + _syncsafe(len(frames)) + frames + data[_id3_size(data):]


def _read_id3(data: bytes) -> dict[str, str]:
    """TXXX frames of an ID3v2.3/2.4 tag in Latin-1 or UTF-8 (what ffmpeg and we write)."""
    version, end, pos, tags = data[3], _id3_size(data), 10, {}
    if data[5] & 0x40:   # an extended header comes first
        raw = data[10:14]
        pos += _unsyncsafe(raw) if version == 4 else 4 + int.from_bytes(raw, "big")
    while pos + 10 <= end and data[pos:pos + 4] != b"\0\0\0\0":
        raw = data[pos + 4:pos + 8]
        size = _unsyncsafe(raw) if version == 4 else int.from_bytes(raw, "big")
        frame_id, body = data[pos:pos + 4], data[pos + 10:pos + 10 + size]
        pos += 10 + size
        if frame_id != b"TXXX" or not body or body[0] not in (0, 3):
            continue
        encoding = "utf-8" if body[0] == 3 else "latin-1"
        key, _, value = body[1:].partition(b"\0")
        tags[key.decode(encoding)] = value.rstrip(b"\0").decode(encoding)
    return tags
