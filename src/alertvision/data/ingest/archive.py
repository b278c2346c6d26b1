"""Tar and tar.gz archives read as a stream that counts damage and reads on after it.

:func:`read_archive` yields every regular-file member of a ``.tar`` or ``.tar.gz`` / ``.tgz``
archive (gzip is told by its magic bytes) as a :class:`Member`, reading the file 64 KiB at a time:
neither the archive nor the decompressed tar is ever held whole, only the member being read and the
one before it (and, after gzip damage, the few MiB searched for a place to resume).

Damage is found, counted and read past:

* **Tar layer** (512-byte blocks). A header with a bad checksum or an impossible size is damage:
  the reader scans forward for the next valid header (checksum and ustar/GNU magic) and goes on
  from there. It scans byte by byte, from the start of the data of the member before the bad header
  (bytes lost or added in damage move the headers after them off the 512-byte grid, even into that
  member: then it is damaged too, so a member is held until the header after it proves it whole). A
  member whose data runs past the end of the archive, or into a gzip break, is cut short: damaged.
  An archive without its end-of-archive zero blocks was truncated. Zero blocks are passed over as
  ``tar --ignore-zeros`` does, so concatenated archives are read whole; GNU long names
  (``././@LongLink``) and pax ``path`` / ``size`` records apply to the member that follows. Tar has
  no checksum over member data: bytes garbled in place inside a member reach the Avro reader.
* **Gzip layer**: decompressed piece by piece with zlib, one gzip member after another. On a zlib
  error the reader searches for the start of a later deflate block: it tries raw inflate at each
  bit offset from 64 KiB before the failure on (zlib often decodes garbage for a while before it
  fails), with the window primed with 32 KiB of zeros so that back-references into the lost data
  decode (to wrong bytes) instead of failing. A candidate is taken when it decodes past the point
  where zlib failed and its output holds a valid tar header that does not depend on the lost
  window. From there it is decoded twice, over a window of zeros and over one of 0xFF bytes,
  until 32 KiB of output have agreed: the bytes where the two differ are exactly those that depend
  on the lost window, and a member holding any is damaged (never yielded). The search gives up
  ``max_search`` bytes (4 MiB) after the failure and counts the rest of the file unreadable.
  Huffman codes often resynchronise by themselves after garbage, so zlib may not fail at all: a bad
  tar header in a .tar.gz (one not explained by known-wrong bytes) therefore throws away what was
  decoded from there and resumes the same way at a deflate block after it. A CRC or length mismatch
  in a gzip trailer is counted (the data of that gzip member may be damaged: stored deflate blocks,
  what incompressible data such as the packets' gzipped stamps becomes, carry no check of their
  own) and reading goes on; a gzip stream that ends early is counted as truncated.

A damaged region -- from where damage shows to the next member read whole, or the end -- is one
``Skip("corrupt_archive", "<path>@<offset>", detail)``. The offset is a byte offset in the archive
file: in a .tar the tar offset; in a .tar.gz the compressed offset where zlib failed, or, for damage
the tar layer sees, the compressed offset read when it showed (within one 16 KiB piece). The detail
says what was found, which members were cut, where decompression resumed and how many bytes were
lost. After the last member an :class:`~alertvision.data.ingest.packets.InputReport` gives the archive's
totals under :data:`REPORT_KEYS`:

``members_read``
    regular-file members read whole (all of them, not only those ``wanted``)
``members_damaged``
    regular-file members cut short, moved by damage, or holding bytes that depend on lost data
``bad_headers``
    blocks where a header should have been and was not (the member behind one is lost unnamed)
``damaged_regions``
    the ``corrupt_archive`` skips
``bytes_unreadable``
    archive-file bytes passed over: in a .tar the tar bytes below; in a .tar.gz the compressed
    bytes jumped from where damage showed to where decompression resumed, plus the rest of a file
    given up on
``tar_bytes_unreadable``
    tar bytes thrown away: damaged members, bad headers, what was decoded after undetected gzip
    damage, and what was scanned past to the next valid header
"""

from __future__ import annotations

import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from alertvision.data.ingest.packets import InputReport, Skip

BLOCK = tarfile.BLOCKSIZE
#: Bytes read from the archive file at a time.
READ_SIZE = 1 << 16
#: Compressed bytes fed to zlib at a time (the resolution of offsets the tar layer reports in a .tar.gz).
FEED_SIZE = 1 << 14
#: The deflate window: how far back a back-reference reaches.
WINDOW = 1 << 15
#: How far before the point where zlib failed the search for a deflate block starts.
BACKOFF = 1 << 16
#: How far after the failure the search goes before the rest of the file is given up.
MAX_SEARCH = 4 << 20
#: Compressed bytes a candidate may take, past the failure, to produce a tar header.
TRIAL_LIMIT = 1 << 20
#: A wanted member claiming more bytes than this has an impossible size (an alert packet is < 1 MiB).
MAX_MEMBER = 64 << 20
#: Keys of the per-archive report (see the module docstring).
REPORT_KEYS = (
    "members_read",
    "members_damaged",
    "bad_headers",
    "damaged_regions",
    "bytes_unreadable",
    "tar_bytes_unreadable",
)

_ZERO_BLOCK = bytes(BLOCK)
_GZIP_MAGIC = b"\x1f\x8b\x08"
_MAGIC_AT = 257  # offset of "ustar" in a ustar or GNU header
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE)
_PROBE = 64  # compressed bytes a candidate is first tried on
_MARGIN = 8  # bytes past the failure a candidate must decode to


@dataclass(frozen=True)
class Member:
    """A regular-file member of an archive, read whole."""

    name: str
    data: bytes


def read_archive(
    fh: BinaryIO,
    origin: str,
    *,
    wanted: Callable[[str], bool] = lambda name: True,
    max_search: int = MAX_SEARCH,
    max_member: int = MAX_MEMBER,
) -> Iterator[Member | Skip | InputReport]:
    """The ``wanted`` regular-file members of the archive open in ``fh`` (a .tar or .tar.gz; ``origin``
    names it), a ``corrupt_archive`` :class:`Skip` per damaged region, then one report of the totals.

    Members not wanted are passed over without being held. See the module docstring for the damage
    found and how reading goes on after it.
    """
    head = fh.read(READ_SIZE)
    if head.startswith(_GZIP_MAGIC[:2]):
        inflater = _Inflater(fh, head, max_search)
        stream = _TarStream(inflater.chunks(), inflater.distrust)
    else:
        stream = _TarStream(_plain_chunks(fh, head))
    reader = _TarReader(stream, origin, wanted, max_member)
    yield from reader.members()
    yield InputReport(origin, dict(reader.counts))


# --- the layer below the tar: pieces of tar bytes, and the breaks in them ---------------------------------


@dataclass(frozen=True)
class _Data:
    """Tar bytes from the layer below; ``wrong``: indices of those known to be wrong (decoded from a lost window)."""

    data: bytes
    file_offset: int  # archive-file bytes consumed when these came out
    wrong: np.ndarray | None = None


@dataclass(frozen=True)
class _Break:
    """Damage below the tar layer, where it was found and what it cost."""

    file_offset: int
    detail: str
    skipped: int = 0  # archive-file bytes jumped over
    gap: bool = True  # tar bytes were lost here (False: they go on unbroken, as after a failed CRC)
    final: bool = False  # no tar bytes follow


def _plain_chunks(fh: BinaryIO, head: bytes) -> Iterator[_Data]:
    """An uncompressed tar as pieces of bytes."""
    offset, chunk = 0, head
    while chunk:
        offset += len(chunk)
        yield _Data(chunk, offset)
        chunk = fh.read(READ_SIZE)


@dataclass
class _Decoder:
    """The zlib state decoding a gzip member; after a resync (``raw``) also its shadow over a 0xFF window."""

    main: Any
    raw: bool = False
    shadow: Any = None
    clean: int = 0  # output bytes since the last one the shadow disagreed on


@dataclass(frozen=True)
class _Sync:
    """A place to resume decompression: the candidate's bit offset, its decoders and output so far."""

    bit: int
    fed: int  # file offset after the compressed bytes the decoders consumed
    main: Any
    shadow: Any
    out: bytes
    ref: bytes


class _Inflater:
    """Gzip -> tar bytes, gzip member after gzip member, resynchronising after damage."""

    def __init__(self, fh: BinaryIO, head: bytes, max_search: int):
        self.fh = fh
        self.max_search = max_search
        self.comp = bytearray(head)  # compressed bytes held, from file offset self.base on
        self.base = 0
        self.at_eof = False
        self.fed = 0  # file offset of the next compressed byte to decode
        self.floor = 0  # no deflate block is searched for before this offset
        self.check_failed: int | None = None  # where the last gzip trailer check failed
        self.distrusted = False
        self.done = False

    def chunks(self) -> Iterator[_Data | _Break]:
        """The tar bytes and the breaks in them, to the end of the file."""
        dec: _Decoder | None = None
        while not self.done:
            if self.distrusted:
                why = f"the tar bytes decoded up to byte {self.fed} are damaged"
                dec = yield from self._resync(self.fed, why, self.fed, backoff=0)
            elif dec:
                dec = yield from self._feed(dec)
            else:
                dec = yield from self._next_member()

    def distrust(self) -> None:
        """The tar layer found damage that zlib decoded without failing (Huffman codes resynchronise by
        themselves, but what they decode back-references the garbage): go on from a deflate block after
        what was decoded, where the bytes that depend on the garbage can be told."""
        self.distrusted = True

    # the compressed bytes

    def _have(self, upto: int) -> bool:
        """Read until the bytes held reach file offset ``upto``; False if the file ends first."""
        while self.base + len(self.comp) < upto and not self.at_eof:
            chunk = self.fh.read(READ_SIZE)
            self.comp += chunk
            self.at_eof = not chunk
        return self.base + len(self.comp) >= upto

    def _bytes(self, start: int, stop: int) -> bytes:
        return bytes(self.comp[start - self.base : stop - self.base])

    def _release(self) -> None:
        """Let go of compressed bytes no search can need again."""
        cut = max(self.floor, self.fed - BACKOFF) - self.base
        if cut >= READ_SIZE:
            del self.comp[:cut]
            self.base += cut

    # decoding

    def _next_member(self) -> Iterator[_Data | _Break]:
        """Start the gzip member at ``fed``; None at the end of the file (zero padding allowed)."""
        if self._zeros_to_end():
            self.done = True
            return None
        if self._bytes(self.fed, self.fed + 3) == _GZIP_MAGIC:
            self.floor, self.check_failed = self.fed, None
            return _Decoder(zlib.decompressobj(31))
        anchor = self.fed if self.check_failed is None else self.check_failed
        self.check_failed = None
        return (yield from self._resync(self.fed, f"no gzip member at byte {self.fed}", anchor))

    def _zeros_to_end(self) -> bool:
        """Whether only zero bytes follow ``fed`` (passing over them as it reads)."""
        while True:
            self._have(self.fed + READ_SIZE)
            rest = self.comp[self.fed - self.base :]
            if rest.strip(b"\0"):
                self.fed += len(rest) - len(rest.lstrip(b"\0"))
                return False
            self.fed += len(rest)
            self._release()
            if self.at_eof:
                return True

    def _feed(self, dec: _Decoder) -> Iterator[_Data | _Break]:
        """Decode the next piece; the decoder to go on with, or None after the end of a gzip member."""
        if not self._have(self.fed + 1):
            yield _Break(self.fed, f"the gzip stream ends at byte {self.fed} before its end: truncated", final=True)
            self.done = True
            return None
        start = self.fed
        piece = self._bytes(start, start + FEED_SIZE)
        saved = dec.main.copy()
        try:
            out = dec.main.decompress(piece)
        except zlib.error as exc:
            return (yield from self._failed(dec, saved, piece, exc))
        ref = _decode_or_none(dec.shadow, piece)
        self.fed = start + len(piece) - len(dec.main.unused_data)
        yield from self._emit(dec, out, ref)
        self._release()
        return self._after(dec)

    def _after(self, dec: _Decoder) -> _Decoder | None:
        """The decoder, or None when its gzip member has ended (past the trailer a resync cannot check)."""
        if not dec.main.eof:
            return dec
        if dec.raw:
            self.fed += 8
        return None

    def _emit(self, dec: _Decoder, out: bytes, ref: bytes | None) -> Iterator[_Data]:
        """Pass ``out`` on with the bytes where the shadow disagrees marked wrong; drop the shadow once
        a window's worth of output has agreed."""
        if not out:
            return
        wrong = None if dec.shadow is None else _differences(out, ref)
        if wrong is not None:
            dec.clean = len(out) - 1 - int(wrong[-1]) if wrong.size else dec.clean + len(out)
            if dec.clean >= WINDOW:
                dec.shadow = None
        yield _Data(out, self.fed, wrong if wrong is not None and wrong.size else None)

    def _failed(self, dec: _Decoder, saved: Any, piece: bytes, exc: zlib.error) -> Iterator[_Data | _Break]:
        """zlib failed in ``piece``: pass on what it decoded before, count the damage, resume if it can."""
        out, at = _replay(saved, piece)
        failed_at = self.fed + at
        if out:
            yield _Data(out, failed_at, np.arange(len(out)) if dec.shadow is not None else None)
        message = str(exc).split(": ", 1)[-1]
        if not dec.raw and message in ("incorrect data check", "incorrect length check"):
            what = "CRC" if "data" in message else "length"
            yield _Break(
                failed_at,
                f"gzip {what} check failed at byte {failed_at}: the data of this gzip member may be damaged",
                gap=False,
            )
            self.fed = failed_at + 1 + (4 if what == "CRC" else 0)
            self.check_failed = failed_at
            return None
        return (yield from self._resync(failed_at, f"zlib failed at byte {failed_at} ({message})", failed_at))

    def _resync(self, failed_at: int, why: str, anchor: int, backoff: int = BACKOFF) -> Iterator[_Data | _Break]:
        """Find a deflate block to go on from, searching from ``backoff`` bytes before ``anchor``; the
        decoder to go on with (None if there is none: the rest of the file is counted unreadable)."""
        self.distrusted = False  # whatever the tar layer distrusted so far is behind the new start
        sync = self._search(max(self.floor, self.base, anchor - backoff), failed_at)
        if sync is None:
            rest = self._rest(failed_at)
            yield _Break(
                failed_at,
                f"{why}; no deflate block in the {self.max_search} bytes after it decodes to a "
                "tar header free of the lost bytes: the rest of the file "
                f"({rest} bytes) is unreadable",
                skipped=rest,
                final=True,
            )
            self.done = True
            return None
        byte, bit = divmod(sync.bit, 8)
        yield _Break(
            failed_at, f"{why}; decompression resumed at byte {byte} bit {bit}", skipped=max(0, byte - failed_at)
        )
        self.fed, self.floor = sync.fed, byte + 1
        dec = _Decoder(sync.main, raw=True, shadow=sync.shadow)
        yield from self._emit(dec, sync.out, sync.ref)
        return self._after(dec)

    def _rest(self, offset: int) -> int:
        """The bytes from ``offset`` to the end of the file (read through, not held)."""
        end = self.base + len(self.comp)
        while not self.at_eof:
            chunk = self.fh.read(READ_SIZE)
            end += len(chunk)
            self.at_eof = not chunk
        self.comp.clear()
        self.base = self.fed = end
        return end - offset

    def _search(self, lo: int, failed_at: int) -> _Sync | None:
        """The first bit offset from ``lo`` on where raw inflate decodes past ``failed_at`` into a tar header."""
        self._have(failed_at + self.max_search + TRIAL_LIMIT)
        data = self._bytes(lo, failed_at + self.max_search + TRIAL_LIMIT)
        stop = min(len(data), failed_at + self.max_search - lo)
        for start in range(0, stop, READ_SIZE):
            for bit in _block_starts(data, start, min(stop, start + READ_SIZE)):
                sync = _trial(data, int(bit), failed_at - lo)
                if sync is not None:
                    return _Sync(sync.bit + 8 * lo, sync.fed + lo, sync.main, sync.shadow, sync.out, sync.ref)
        return None


def _decode_or_none(shadow: Any, piece: bytes) -> bytes | None:
    """What the shadow decodes of ``piece`` (None without a shadow)."""
    if shadow is None:
        return None
    try:
        return shadow.decompress(piece)
    except zlib.error:
        return b""  # cannot happen when the main decoder got through: then all of its output counts as tainted


def _differences(out: bytes, ref: bytes | None) -> np.ndarray:
    """Indices where ``out`` and ``ref`` differ (all of ``out`` if their lengths do)."""
    if ref is None or len(ref) != len(out):
        return np.arange(len(out))
    return np.flatnonzero(np.frombuffer(out, np.uint8) != np.frombuffer(ref, np.uint8))


def _replay(saved: Any, piece: bytes) -> tuple[bytes, int]:
    """Feed ``piece`` byte by byte to ``saved``: the output before it fails and the index of the failing byte."""
    out = bytearray()
    for i in range(len(piece)):
        try:
            out += saved.decompress(piece[i : i + 1])
        except zlib.error:
            return bytes(out), i
    return bytes(out), len(piece)


# --- the resync search -------------------------------------------------------------------------------------


def _bits(data: bytes, start: int, stop: int) -> np.ndarray:
    """The bits of data[start:stop + 16] in deflate order (least significant first), padded with zeros."""
    chunk = np.frombuffer(data[start : stop + 16], np.uint8)
    bits = np.unpackbits(chunk, bitorder="little")
    return np.concatenate([bits, np.zeros(256, np.uint8)])


def _block_starts(data: bytes, start: int, stop: int) -> np.ndarray:
    """Bit offsets in data[start:stop] where a deflate block header could begin, in order.

    Dropped: block type 3; a stored block whose LEN and NLEN do not match; a dynamic block with
    too many codes or whose code-length code is not complete. Fixed-Huffman blocks all pass.
    """
    bits = _bits(data, start, stop)
    n = 8 * (stop - start)
    p = np.arange(n)

    def value(offset: int, width: int) -> np.ndarray:
        return sum(bits[offset + t : offset + t + n].astype(np.int64) << t for t in range(width))

    btype = value(1, 2)
    ok = btype == 1
    # stored: LEN, NLEN at the next byte boundary after the 3 header bits
    chunk = np.frombuffer(data[start : stop + 8], np.uint8).astype(np.int64)
    chunk = np.concatenate([chunk, np.zeros(8, np.int64)])
    aligned = (p + 3 + 7) // 8
    length = chunk[aligned] | chunk[aligned + 1] << 8
    nlength = chunk[aligned + 2] | chunk[aligned + 3] << 8
    ok |= (btype == 0) & ((length ^ nlength) == 0xFFFF)
    # dynamic: HLIT <= 29, HDIST <= 29, a complete code-length code
    hclen = value(13, 4) + 4
    kraft = np.zeros(n, np.int64)
    for j in range(19):
        lens = value(17 + 3 * j, 3)
        kraft += np.where((j < hclen) & (lens > 0), 1 << (7 - lens), 0)
    ok |= (btype == 2) & (value(3, 5) <= 29) & (value(8, 5) <= 29) & (kraft == 128)
    return p[ok] + 8 * start


@dataclass(frozen=True)
class _Prefix:
    """A fixed-Huffman block that emits ``literals`` bytes and shifts what follows by a number of bits."""

    whole: bytes  # its whole bytes
    partial: int  # its last bits, to go below the first byte of the data
    literals: int  # bytes it emits, to be dropped


@lru_cache(maxsize=None)
def _prefix(shift: int, literal: int) -> _Prefix:
    """The prefix that makes raw inflate start ``shift`` bits into a byte, with byte boundaries kept.

    A non-final fixed-Huffman block of (shift - 2) mod 8 nine-bit literals and the end-of-block code
    is 10 + 9 * n bits long, which is ``shift`` bits past a byte boundary.
    """
    n = (shift - 2) % 8
    bits = [0, 1, 0]  # BFINAL 0, BTYPE 01 (fixed Huffman)
    code = 0b110010000 + literal - 144  # literals 144-255: nine-bit codes, written most significant bit first
    for _ in range(n):
        bits += [(code >> (8 - i)) & 1 for i in range(9)]
    bits += [0] * 7  # end of block
    whole = len(bits) // 8
    packed = np.packbits(np.array(bits + [0] * (-len(bits) % 8), np.uint8), bitorder="little").tobytes()
    return _Prefix(packed[:whole], packed[whole] if shift else 0, n)


#: The two windows a resynced stream is decoded over: (window byte, prefix literal) each, all differing.
_WINDOWS = ((0x00, 0x90), (0xFF, 0xFF))


@lru_cache(maxsize=None)
def _primed(shift: int, which: int) -> tuple[Any, int]:
    """A raw inflater over window ``which`` that has read the whole bytes of the prefix for ``shift``
    (copy it before use), and how many of the prefix's literals it has yet to emit."""
    fill, literal = _WINDOWS[which]
    prefix = _prefix(shift, literal)
    dec = zlib.decompressobj(-15, zdict=bytes([fill]) * WINDOW)
    return dec, prefix.literals - len(dec.decompress(prefix.whole))


def _start(data: bytes, bit: int, which: int, stop: int) -> tuple[Any, bytes]:
    """A decoder over window ``which`` that has read ``data`` from bit offset ``bit`` up to byte ``stop``,
    and its output."""
    byte, shift = divmod(bit, 8)
    primed, pending = _primed(shift, which)
    dec = primed.copy()
    first = bytes([_prefix(shift, _WINDOWS[which][1]).partial | (data[byte] & (0xFF << shift) & 0xFF)])
    # the prefix's last literals precede everything the data decodes to, and come out with its first byte
    return dec, dec.decompress(first + data[byte + 1 : stop])[pending:]


def _trial(data: bytes, bit: int, failed_at: int) -> _Sync | None:
    """Whether raw inflate from ``bit`` decodes past ``failed_at`` into output holding a tar header that
    does not depend on the lost window; offsets relative to ``data``."""
    byte = bit // 8
    end = min(len(data), max(byte, failed_at) + TRIAL_LIMIT)
    stop = min(end, byte + 1 + _PROBE)
    try:
        dec, out = _start(data, bit, 0, stop)
        out = bytearray(out)
        step = _PROBE
        while True:
            consumed = stop - len(dec.unused_data)
            if dec.eof and consumed <= failed_at:
                return None
            if consumed > failed_at + _MARGIN or dec.eof:
                sync = _verified(data, bit, dec, bytes(out), stop, consumed)
                if sync is not None:
                    return sync
            if dec.eof or stop >= end:
                return None
            step = min(4 * step, READ_SIZE)
            out += dec.decompress(data[stop : min(end, stop + step)])
            stop = min(end, stop + step)
    except zlib.error:
        return None


def _verified(data: bytes, bit: int, dec: Any, out: bytes, stop: int, consumed: int) -> _Sync | None:
    """The resync point, if ``out`` holds a valid tar header that decodes the same over the other window."""
    h = find_header(out, 0)
    if h < 0:
        return None
    shadow, ref = _start(data, bit, 1, stop)
    while h >= 0:
        if out[h : h + BLOCK] == ref[h : h + BLOCK]:
            return _Sync(bit, consumed, dec, shadow, out, ref)
        h = find_header(out, h + 1)
    return None


# --- the tar layer -----------------------------------------------------------------------------------------


def find_header(buf: bytes | bytearray, start: int) -> int:
    """Index of the first valid tar header (checksum and ustar/GNU magic) at or after ``start`` that
    lies wholly in ``buf``; -1 if none does."""
    at = start + _MAGIC_AT
    while True:
        at = buf.find(b"ustar", at)
        h = at - _MAGIC_AT
        if at < 0 or h + BLOCK > len(buf):
            return -1
        if _parse(bytes(buf[h : h + BLOCK])) is not None:
            return h
        at += 1


def _parse(block: bytes) -> tarfile.TarInfo | None:
    """The header in a 512-byte block, None if its checksum or a number in it is bad."""
    try:
        return tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return None


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _data_size(info: tarfile.TarInfo, size: int) -> int:
    """Bytes of data that follow the header in the archive (as tarfile reads them)."""
    if (
        info.type in _REGULAR
        or info.type in (tarfile.GNUTYPE_SPARSE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
        or info.type not in tarfile.SUPPORTED_TYPES
    ):
        return size
    return 0


def _extension(info: tarfile.TarInfo, data: bytes) -> dict[str, Any]:
    """What a GNU long-name or pax header says about the member that follows (its path, its size)."""
    if info.type == tarfile.GNUTYPE_LONGNAME:
        return {"path": data.split(b"\0", 1)[0].decode(tarfile.ENCODING, "surrogateescape")}
    found: dict[str, Any] = {}
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")[2].partition(b"=")
        if key == b"path":
            found["path"] = value.decode("utf-8", "surrogateescape")
        elif key == b"size" and value.isdigit():
            found["size"] = int(value)
    return found


class _TarStream:
    """The tar bytes from the layer below, buffered from tar position ``start`` on; it stops at a break."""

    def __init__(self, chunks: Iterator[_Data | _Break], distrust: Callable[[], None] | None = None):
        self.chunks = chunks
        self.distrust_source = distrust  # for a .tar.gz: ask the inflater to resynchronise
        self.buf = bytearray()
        self.start = 0
        self.wrong = np.zeros(0, np.int64)  # tar positions of bytes known to be wrong, ascending
        self.file_offset = 0
        self.brk: _Break | None = None
        self.ended = False
        self.notes: list[_Break] = []  # damage that broke nothing (a failed CRC)

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def more(self) -> bool:
        """Take in the next piece of tar bytes; False at a break or the end."""
        while self.brk is None and not self.ended:
            item = next(self.chunks, None)
            if item is None:
                self.ended = True
            elif isinstance(item, _Break):
                if item.gap or item.final:
                    self.brk = item
                else:
                    self.notes.append(item)
            else:
                if item.wrong is not None:
                    self.wrong = np.concatenate([self.wrong, item.wrong + self.end])
                self.buf += item.data
                self.file_offset = item.file_offset
                return True
        return False

    def fill(self, upto: int) -> bool:
        """Take in tar bytes up to position ``upto``; False if a break or the end comes first."""
        while self.end < upto:
            if not self.more():
                return False
        return True

    def take(self, start: int, stop: int) -> bytes:
        """The bytes held in [start, stop) (those before ``start`` of the stream's, if dropped, left out)."""
        return bytes(self.buf[max(0, start - self.start) : max(0, stop - self.start)])

    def is_wrong(self, start: int, stop: int) -> bool:
        """Whether any byte in [start, stop) is known to be wrong."""
        i = np.searchsorted(self.wrong, start)
        return bool(i < self.wrong.size and self.wrong[i] < stop)

    def drop(self, upto: int) -> None:
        """Let go of the bytes before position ``upto`` (of those taken in)."""
        upto = min(upto, self.end)
        if upto > self.start:
            del self.buf[: upto - self.start]
            self.start = upto
            if self.wrong.size and self.wrong[0] < upto:
                self.wrong = self.wrong[np.searchsorted(self.wrong, upto) :]

    def distrust(self, pos: int) -> int | None:
        """Throw away the bytes from ``pos`` on and have the layer below go on from a later deflate block;
        the number of bytes thrown away, None if the layer below cannot (an uncompressed tar)."""
        if self.distrust_source is None:
            return None
        self.distrust_source()
        thrown = max(0, self.end - pos)
        del self.buf[pos - self.start :]
        self.wrong = self.wrong[: np.searchsorted(self.wrong, pos)]
        return thrown

    def resume(self) -> _Break:
        """Go on after the break: the bytes held are dropped; the break."""
        brk, self.brk = self.brk, None
        self.drop(self.end)
        return brk


@dataclass
class _Region:
    """A damaged stretch of the archive, open until a member is read whole again."""

    offset: int
    what: list[str] = field(default_factory=list)
    tar_bytes: int = 0
    file_bytes: int = 0


@dataclass(frozen=True)
class _Held:
    """A member read whole, held until the header after it proves its end was where its header said."""

    pos: int
    name: str
    data: bytes | None  # None: not wanted (its bytes were passed over)
    ends_region: bool  # read after damage: when it proves whole, the damaged region before it is over


@dataclass(frozen=True)
class _Scan:
    """Look for the next valid header from ``start`` on, after the bad header at ``bad``."""

    start: int
    bad: int


_END = object()  # the archive is read to its end


class _TarReader:
    """Tar entries out of a stream of tar bytes and breaks: members, and the damaged regions as skips."""

    def __init__(self, stream: _TarStream, origin: str, wanted: Callable[[str], bool], max_member: int):
        self.s = stream
        self.origin = origin
        self.plain = stream.distrust_source is None
        self.wanted = wanted
        self.max_member = max_member
        self.counts: Counter = Counter({key: 0 for key in REPORT_KEYS})
        self.region: _Region | None = None
        self.held: _Held | None = None
        self.marker = False  # an end-of-archive zero block was read since the last entry

    def members(self) -> Iterator[Member | Skip]:
        """The wanted members, with a skip for each damaged region before the member after it."""
        pos: Any = 0
        ext: dict[str, Any] = {}
        while pos is not _END:
            self._notes()
            if isinstance(pos, _Scan):
                found = self._scan(pos)
                yield from self._settle(found, pos.bad)
                pos, ext = found, {}
            else:
                pos = yield from self._entry(pos, ext)
        yield from self._release()
        self._notes()
        if not self.marker and self.region is None:
            self._damage("the archive ends without its end-of-archive blocks: truncated", self.s.end)
        yield from self._close()

    # entries

    def _entry(self, pos: int, ext: dict[str, Any]) -> Iterator[Member | Skip]:
        """Read the entry whose header is at ``pos``; where to go on (a position, a scan, or the end)."""
        self.s.drop(self.held.pos if self.held else pos)
        if not self.s.fill(pos + BLOCK):
            yield from self._release()
            return self._interrupted(pos, f"the archive breaks inside the header at tar byte {pos}")
        block = self.s.take(pos, pos + BLOCK)
        if self.s.is_wrong(pos, pos + BLOCK):
            return self._bad_header(pos, "it holds bytes lost to gzip damage", explained=True)
        if block == _ZERO_BLOCK:
            yield from self._release()
            self.marker = True
            return pos + BLOCK
        info = _parse(block)
        if info is None:
            return self._bad_header(pos, "bad checksum or number")
        name, size = ext.pop("path", info.name), ext.pop("size", info.size)
        regular = info.type in _REGULAR
        keep = info.type in _EXTENSIONS or (regular and self.wanted(name))
        if size < 0 or (keep and size > self.max_member):
            return self._bad_header(pos, f"impossible size {size}", explained=self.s.is_wrong(pos, pos + BLOCK))
        yield from self._release()
        self.marker = False
        length = _data_size(info, size)
        data = self._data(pos + BLOCK, length, keep)
        if data is None:
            what = f"member {name}" if regular else f"entry {name}"
            return self._interrupted(
                pos, f"{what} cut short ({max(0, self.s.end - pos - BLOCK)} of {length} bytes)", regular
            )
        if regular and self.s.is_wrong(pos, pos + BLOCK + length):
            self._damage(f"member {name} holds bytes lost to gzip damage", pos, BLOCK + length)
            self.counts["members_damaged"] += 1
        elif info.type in _EXTENSIONS:
            ext.update(_extension(info, data))
        elif regular:
            self.held = _Held(pos, name, data if keep else None, self.region is not None)
        return pos + BLOCK + _padded(length)

    def _data(self, start: int, length: int, keep: bool) -> bytes | None:
        """The entry's data (empty when not kept: passed over, not held); None if it is cut short."""
        if keep:
            return self.s.take(start, start + length) if self.s.fill(start + length) else None
        while self.s.end < start + length:
            self.s.drop(self.s.end)
            if not self.s.more():
                return None
        return b""

    def _release(self) -> Iterator[Member | Skip]:
        """The held member is whole: count it, close the damaged region before it (if any), yield it if wanted."""
        held, self.held = self.held, None
        if held is None:
            return
        self.counts["members_read"] += 1
        if held.ends_region:
            yield from self._close()
        if held.data is not None:
            yield Member(held.name, held.data)

    def _settle(self, found: Any, bad: int) -> Iterator[Member | Skip]:
        """After a scan from a bad header at ``bad``: the held member is whole unless the header found
        lies inside it (then damage moved its end: its bytes are not to be trusted)."""
        if self.held is None or found is _END or found >= bad:
            yield from self._release()
            return
        held, self.held = self.held, None
        self._damage(
            f"member {held.name} holds the tar header found at tar byte {found}: damage moved its end",
            held.pos,
            found - held.pos,
        )
        self.counts["members_damaged"] += 1

    def _bad_header(self, pos: int, why: str, explained: bool = False) -> _Scan:
        """Count the bad header at ``pos``; where to scan for the next one.

        In a .tar.gz, unless the bad bytes are known ones, what was decoded from the damage on is thrown
        away and decompression goes on from a later deflate block. In a .tar, the scan starts in the held
        member's data (lost or extra bytes move the headers after them), else at the byte after.
        """
        self._damage(f"bad tar header at tar byte {pos} ({why})", pos)
        self.counts["bad_headers"] += 1
        thrown = None if explained else self.s.distrust(pos)
        if thrown is not None:
            self.region.tar_bytes += thrown
            return _Scan(pos, pos)
        held = self.held
        return _Scan(held.pos + BLOCK if held and held.data is not None else pos + 1, pos)

    def _scan(self, scan: _Scan) -> Any:
        """The position of the next valid header from ``scan.start`` on, read through breaks; the end if
        there is none. Bytes passed over from the bad header on are counted as lost."""
        pos, lost_from = scan.start, scan.bad
        while True:
            self.s.drop(pos)
            h = find_header(self.s.buf, pos - self.s.start)
            if h >= 0:
                h += self.s.start
                if not self.s.is_wrong(h, h + BLOCK):
                    self.region.tar_bytes += max(0, h - lost_from)
                    return h
                pos = h + 1  # a header holding bytes known to be wrong: look past it
                continue
            pos = max(pos, self.s.end - BLOCK + 1)
            if not self.s.more():
                self.region.tar_bytes += max(0, self.s.end - lost_from)
                after = self._go_on()
                if after is _END:
                    return _END
                pos = lost_from = after

    def _interrupted(self, pos: int, what: str, member: bool = False) -> Any:
        """The archive broke or ended inside the entry at ``pos``: count it; where to go on."""
        if member or self.s.take(pos, self.s.end).strip(b"\0"):
            self._damage(what, pos, self.s.end - pos)
            self.counts["members_damaged"] += member
        after = self._go_on()
        return _END if after is _END else _Scan(after, after)

    def _go_on(self) -> Any:
        """At a break: count it; the tar position the bytes after it start at (the end if none follow)."""
        if self.s.brk is None:
            return _END
        brk = self.s.resume()
        self._damage(brk.detail, self.s.end, file_offset=brk.file_offset, file_bytes=brk.skipped)
        return _END if brk.final else self.s.end

    # damaged regions

    def _notes(self) -> None:
        for note in self.s.notes:
            self._damage(note.detail, self.s.end, file_offset=note.file_offset)
        self.s.notes.clear()

    def _damage(
        self, what: str, tar_offset: int, tar_bytes: int = 0, *, file_offset: int | None = None, file_bytes: int = 0
    ) -> None:
        """Add damage to the open region (opening one at this offset if none is)."""
        if self.region is None:
            if self.plain:
                offset = tar_offset
            else:
                offset = self.s.file_offset if file_offset is None else file_offset
            self.region = _Region(offset)
        self.region.what.append(what)
        self.region.tar_bytes += tar_bytes
        self.region.file_bytes += file_bytes

    def _close(self) -> Iterator[Skip]:
        """The skip of the open region, if one is open; it is counted and closed."""
        region, self.region = self.region, None
        if region is None:
            return
        self.counts["damaged_regions"] += 1
        self.counts["tar_bytes_unreadable"] += region.tar_bytes
        self.counts["bytes_unreadable"] += region.tar_bytes if self.plain else region.file_bytes
        lost = f"{region.tar_bytes} tar bytes" + ("" if self.plain else f" and {region.file_bytes} compressed bytes")
        yield Skip("corrupt_archive", f"{self.origin}@{region.offset}", f"{'; '.join(region.what)}; {lost} unreadable")
