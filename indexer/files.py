"""Reading photo files without trusting them: regular files only, bounded reads, one read per file.

A FIFO named `y.jpg` would block a plain `open()` forever and a device would never end, so every file is
opened non-blocking and checked with fstat on the open descriptor (no window between check and read) before
a byte is read. The indexer hashes and decodes the very same bytes, so a file rewritten during a run can
never pair its old hash with its new vector.
"""

import hashlib
import os
import stat
from pathlib import Path

from PIL import UnidentifiedImageError

from common.images import starts_like_an_image

HASH_CHUNK = 1 << 20
HEAD_BYTES = 64  # read first, to check the file starts as an image does
_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


class NotAPhotoFile(OSError):
    """The name is a photo's, but it is not a regular file (a FIFO, a device, a socket), or it is too big."""


class NotAnImage(UnidentifiedImageError):
    """A regular file whose first bytes are no image format's: Pillow's own error (said in the same words), with
    the file's `stat`, so that the failure is recorded as of this size and time and not retried unchanged."""

    def __init__(self, message: str, info: os.stat_result):
        super().__init__(message)
        self.stat = info


def max_file_bytes(max_pixels: int) -> int:
    """The largest file worth reading for an image of at most `max_pixels`: uncompressed 16-bit RGB (6 bytes
    a pixel, the densest common layout) plus room for metadata and previews."""
    return 6 * max_pixels + (16 << 20)


def read_file(path: str | Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """(contents, stat taken before reading) of a regular file of at most `max_bytes` that starts as an image;
    anything else raises `NotAPhotoFile` (or the OSError of opening it) without blocking or reading it whole."""
    with _open_regular(path) as file:
        info = os.fstat(file.fileno())
        if info.st_size > max_bytes:
            raise NotAPhotoFile(f"{info.st_size:,} bytes is larger than the {max_bytes:,} an image may have here")
        data = file.read(HEAD_BYTES)
        if not starts_like_an_image(data):  # before reading the rest: any file may be named .jpg
            raise NotAnImage(f"{path}: its first bytes are no image format's", info)
        data += file.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:  # grew while being read
        raise NotAPhotoFile(f"more than {max_bytes:,} bytes, larger than an image may have here")
    return data, info


def file_hash(path: str | Path) -> str:
    """The file's content hash, streamed (hashlib releases the GIL): equal bytes, equal hash, whatever the name."""
    digest = hashlib.blake2b(digest_size=16)
    with _open_regular(path) as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(data: bytes) -> str:
    """The same hash as `file_hash`, of bytes already read."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _open_regular(path: str | Path):
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once, unread
    kind = stat.S_IFMT(os.fstat(descriptor).st_mode)
    if kind != stat.S_IFREG:
        os.close(descriptor)
        raise NotAPhotoFile(f"not a regular file: {_KINDS.get(kind, 'a special file')}")
    return os.fdopen(descriptor, "rb")
