"""RFC 6962 Merkle trees over the log: roots, inclusion proofs and consistency proofs.

Leaves and inner nodes are hashed with different prefixes (0x00, 0x01), so no leaf can
pose as a subtree. Proof shapes and the verification algorithms follow RFC 6962 §2.1 and
RFC 9162 §2.1.3-2.1.4, so any CT-style verifier can check what we print.
"""

import hashlib
from collections.abc import Sequence


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """Every perfect subtree's root, kept by level: any prefix's tree head, inclusion and
    consistency proof in O(log n) hashing, however long the log."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf: bytes) -> None:
        self._levels[0].append(leaf)
        level, index = 0, self.size - 1
        while index & 1:  # a right child completes its parent
            if len(self._levels) == level + 1:
                self._levels.append([])
            below = self._levels[level]
            self._levels[level + 1].append(node_hash(below[index - 1], below[index]))
            level, index = level + 1, index >> 1

    def _range(self, start: int, end: int) -> bytes:
        """MTH of leaves[start:end], where RFC 6962's recursion reaches it (start aligned)."""
        n = end - start
        if n & (n - 1) == 0:  # a perfect subtree: stored
            return self._levels[n.bit_length() - 1][start >> (n.bit_length() - 1)]
        k = _split(n)
        return node_hash(self._range(start, start + k), self._range(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size} in {self.size} leaves")
        return self._range(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` (0-based) in the tree of ``size`` leaves."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of {size}")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                start += k
        return path[::-1]

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """Proof that the tree of ``old_size`` leaves is a prefix of the tree of ``size``."""
        size = self.size if size is None else size
        if not 0 < old_size <= size <= self.size:
            raise ValueError(f"no consistency proof from {old_size} to {size}")
        path: list[bytes] = []
        start, end, m, complete = 0, size, old_size, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                path.append(self._range(start + k, end))
                end = start + k
            else:
                path.append(self._range(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            path.append(self._range(start, end))
        return path[::-1]


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree head over leaf hashes (not leaf data)."""
    return MerkleTree(leaves).root()


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    return MerkleTree(leaves).inclusion_proof(index)


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    return MerkleTree(leaves).consistency_proof(old_size)


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the path
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """The roots of the perfect subtrees covering the leaves so far: the tree head of any
    prefix the log has reached, in O(log n) memory and time per leaf."""

    def __init__(self) -> None:
        self.size = 0
        self._peaks: list[bytes] = []  # left to right, largest subtree first

    def append(self, leaf: bytes) -> None:
        self._peaks.append(leaf)
        self.size += 1
        n = self.size
        while not n & 1:  # two equal perfect subtrees merge into one
            right = self._peaks.pop()
            self._peaks[-1] = node_hash(self._peaks[-1], right)
            n >>= 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        head = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            head = node_hash(peak, head)
        return head

    @property
    def peaks(self) -> tuple[bytes, ...]:
        return tuple(self._peaks)

    def copy(self) -> "Frontier":
        twin = Frontier()
        twin.size, twin._peaks = self.size, list(self._peaks)
        return twin


def consistency_from(base: Frontier, since: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 PROOF(m, D[n]) from the tree's peaks at m (``base``) and the n - m leaves
    after it: no leaf before m is needed, so a checkpointer's memory is bounded by the
    leaves since its last checkpoint, not by the whole log.

    Every range the proof names is a peak of m, a run of m's last peaks (the recursion only
    steps over whole peaks), or leaves after m."""
    m, n = base.size, base.size + len(since)
    if not 0 < m < n:
        return []
    starts, offset = [], 0
    for b in reversed(range(m.bit_length())):
        if m >> b & 1:
            starts.append(offset)
            offset += 1 << b
    peaks = base.peaks

    def old(lo: int) -> bytes:  # MTH of [lo, m): m's peaks from the one starting at lo
        head, *rest = reversed(peaks[starts.index(lo) :])
        for peak in rest:
            head = node_hash(peak, head)
        return head

    def sub(lo: int, hi: int, whole: bool) -> list[bytes]:
        if hi == m:
            return [] if whole else [old(lo)]
        k = _split(hi - lo)
        if m - lo <= k:
            return [*sub(lo, lo + k, whole), root(since[lo + k - m : hi - m])]
        return [*sub(lo + k, hi, False), peaks[starts.index(lo)]]  # [lo, lo + k): one peak

    return sub(0, n, True)


class RecentPrefixes:
    """The tree head of the whole log and of any prefix from ``base.size`` on: the peaks at
    ``base`` and the leaves after it. Memory is the leaves since the last ``forget_before``
    (a checkpoint, in practice), and at most ``kept`` of them."""

    def __init__(self, kept: int | None = None) -> None:
        self.base = Frontier()
        self.since: list[bytes] = []
        self.kept = kept

    @property
    def size(self) -> int:
        return self.base.size + len(self.since)

    def append(self, leaf: bytes) -> None:
        self.since.append(leaf)
        if self.kept is not None and len(self.since) > self.kept:
            self.forget_before(self.size - self.kept // 2)

    def root_at(self, size: int) -> bytes | None:
        """The tree head of the first ``size`` leaves; None when that prefix is forgotten."""
        if not self.base.size <= size <= self.size:
            return None
        head = self.base.copy()
        for leaf in self.since[: size - self.base.size]:
            head.append(leaf)
        return head.root()

    def forget_before(self, size: int) -> bool:
        """Keep prefixes from ``size`` on only; False when ``size`` is outside what is held."""
        step = size - self.base.size
        if not 0 <= step <= len(self.since):
            return False
        for leaf in self.since[:step]:
            self.base.append(leaf)
        del self.since[:step]
        return True
