"""Aligned O_DIRECT reads for ``direct://``: a reused page-aligned bounce buffer per thread.

``O_DIRECT`` requires the file offset, the length and the memory address of every read to be
multiples of the device's logical block size (512 or 4096 bytes). :data:`ALIGN` (4096) satisfies
both. :class:`AlignedReader` reads straight into a caller's buffer where that is possible and
copies only the unaligned head and tail (or the whole, when the buffer cannot be aligned) out of
its bounce buffer.
"""

from __future__ import annotations

import ctypes
import mmap
import os

#: Alignment of offsets, lengths and addresses for every O_DIRECT read (one page).
ALIGN = 4096
#: The most one direct ``preadv`` moves into a caller's buffer (aligned, under Linux's 2 GiB cap).
MAX_DIRECT_IO = 1 << 30
#: Bytes per direct read when a large buffer is not aligned like the file offset.
SHIFT_CHUNK = 64 << 20


def address_of(view: memoryview) -> int:
    """The memory address of the first byte of a writable, non-empty ``view``."""
    anchor = ctypes.c_char.from_buffer(view)
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor


class AlignedReader:
    """Reads from an O_DIRECT file descriptor through one page-aligned ``block_size`` buffer.

    Not thread-safe: each thread holds its own reader. Every method reads at most the bytes
    asked for and returns how many it got (fewer only at end of file).
    """

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        # page-aligned; private, so a forked child never shares it with its parent
        self._buffer = mmap.mmap(-1, block_size, flags=mmap.MAP_PRIVATE)
        self._view = memoryview(self._buffer)

    def close(self) -> None:
        self._view.release()
        self._buffer.close()

    def read_small(self, fd: int, offset: int, n: int) -> bytes:
        """``n`` bytes from ``offset`` as ``bytes`` (one copy when they fit the buffer)."""
        lead = offset % ALIGN
        span = _round_up(lead + n)
        if span > self.block_size:
            out = bytearray(n)
            got = self.read_into(fd, memoryview(out), offset)
            return bytes(out[:got])
        got = os.preadv(fd, [self._view[:span]], offset - lead)
        return bytes(self._view[lead : lead + max(0, min(n, got - lead))])

    def read_into(self, fd: int, dest: memoryview, offset: int) -> int:
        """Fill ``dest`` from file ``offset``: directly where aligned, else through the buffer."""
        n = len(dest)
        if n == 0:
            return 0
        head = (-offset) % ALIGN
        if n < 2 * self.block_size:
            if n < head + ALIGN or (address_of(dest) - offset) % ALIGN:
                return self.bounce(fd, dest, offset)
        elif (address_of(dest) - offset) % ALIGN:
            return self.shifted(fd, dest, offset)
        if head:
            got = self.bounce(fd, dest[:head], offset)
            if got < head:
                return got
        end = head + (n - head) // ALIGN * ALIGN
        pos = head
        while pos < end:
            got = os.preadv(fd, [dest[pos : min(end, pos + MAX_DIRECT_IO)]], offset + pos)
            pos += got
            if got == 0 or got % ALIGN:  # end of file
                return pos
        if pos < n:
            pos += self.bounce(fd, dest[pos:], offset + pos)
        return pos

    def shifted(self, fd: int, dest: memoryview, offset: int) -> int:
        """Fill a large ``dest`` whose address is not congruent to ``offset`` modulo ALIGN.

        Reads ``SHIFT_CHUNK`` bytes at a time with O_DIRECT into the aligned part of ``dest``,
        ``shift`` bytes to the right of where they belong, then moves them left into place
        (one ``memmove`` per chunk, over bytes already moved or not yet needed). The few bytes
        before and after go through the bounce buffer. Same one copy per byte as ``bounce``, but
        in large reads that keep the device busy.
        """
        n = len(dest)
        first = (-address_of(dest)) % ALIGN  # dest[first] is the first aligned byte
        shift = (offset + first) % ALIGN  # 1..ALIGN-1, as dest and offset are not congruent
        start = offset + first - shift  # aligned file offset read into dest[first]
        length = (n - first) // ALIGN * ALIGN
        skip = max(0, shift - first)  # bytes read from before ``offset``: dropped
        low = first - shift + skip  # == max(0, first - shift): dest[:low] comes by bounce
        if low > 0 and self.bounce(fd, dest[:low], offset) < low:
            return 0  # cannot happen: the file reaches past low
        done = 0  # dest[low : first - shift + done] holds its final bytes
        while done < length:
            want = min(SHIFT_CHUNK, length - done)
            got = os.preadv(fd, [dest[first + done : first + done + want]], start + done)
            lo = first + done + (skip if done == 0 else 0)
            dest[lo - shift : first + done + got - shift] = dest[lo : first + done + got]
            done += got
            if got < want:  # end of file
                return max(0, first - shift + done)
        pos = first - shift + done
        return pos + self.bounce(fd, dest[pos:], offset + pos)

    def bounce(self, fd: int, dest: memoryview, offset: int) -> int:
        """Fill ``dest`` from file ``offset`` through the bounce buffer, a block at a time."""
        done = 0
        n = len(dest)
        view = self._view
        while done < n:
            pos = offset + done
            lead = pos % ALIGN
            span = min(self.block_size, _round_up(lead + n - done))
            got = os.preadv(fd, [view[:span]], pos - lead)
            take = min(got - lead, n - done)
            if take <= 0:
                break
            dest[done : done + take] = view[lead : lead + take]
            done += take
            if got < span:
                break
        return done


def _round_up(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def file_system_of(path: str) -> str:
    """``"tmpfs mounted at /dev/shm"``: the file system holding ``path``, from mountinfo."""
    target = os.path.realpath(path)
    best_point, best_type = "", "unknown file system"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ").replace("\\011", "\t")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best_point):
                    best_point, best_type = point, right.split()[0]
    except OSError:
        return "unknown file system"
    return f"{best_type} mounted at {best_point}" if best_point else best_type
