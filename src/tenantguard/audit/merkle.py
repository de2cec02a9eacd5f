"""The Merkle tree of RFC 6962 (and RFC 9162 §2.1) over a tenant's audit log. Pure.

Leaves are the events' `event_hash`es in `seq` order; a leaf hashes as SHA-256(0x00 || data),
an interior node as SHA-256(0x01 || left || right), and the tree splits at the largest power of
two below its size, so any independent RFC 6962 implementation computes the same roots and
checks the same proofs. Inclusion proofs (`PATH`) show that an event is in a tree of a given
size; consistency proofs (`PROOF`) show that a tree of size `first` is a prefix of the tree of
size `second`: history only grew, nothing in it was changed, removed or reordered.

Threat stopped: a log rewritten after a checkpoint was signed or witnessed (edits, deletions,
insertions, reorders, and a rolled-back tail), which no recomputed hash chain can show alone.

Verification raises `AuditVerificationFailed` (fail closed: a malformed proof is an invalid
one); asking for a proof the log cannot have is `RequestInvalid`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from tenantguard.errors import AuditVerificationFailed, RequestInvalid

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_PROOF_LENGTH = 64  # a tree of 2**63 leaves needs 63 hashes: anything longer is forged


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH of the leaf hashes leaves[lo:hi] (no copies; recursion depth is log2 of the size)."""
    n = hi - lo
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of a sequence of leaf hashes (`leaf_hash` of each datum)."""
    return EMPTY_ROOT if not leaves else _mth(leaves, 0, len(leaves))


def prefix_roots(leaves: Sequence[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """The roots of the trees of the first `n` leaves for each `n` in `sizes`, in one pass:
    a stack of perfect subtrees grows with each leaf; a prefix's root folds the stack from the
    right (the RFC 6962 shape). O(len(leaves) + len(sizes) * log n) hashes, not one tree each."""
    wanted = sorted({n for n in sizes if 0 <= n <= len(leaves)})
    found: dict[int, bytes] = {}
    stack: list[tuple[int, bytes]] = []  # (subtree size, root), sizes strictly decreasing
    position = 0
    for n in wanted:
        while position < n:
            size, node = 1, leaves[position]
            while stack and stack[-1][0] == size:
                left = stack.pop()[1]
                size, node = size * 2, node_hash(left, node)
            stack.append((size, node))
            position += 1
        if n == 0:
            found[0] = EMPTY_ROOT
            continue
        folded = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            folded = node_hash(left, folded)
        found[n] = folded
    return found


def _check_sizes(index: int, size: int, available: int) -> None:
    if not (0 <= index < size <= available):
        raise RequestInvalid("The requested index and tree size do not fit the log.")


def inclusion_proof(index: int, size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[size]) of RFC 6962 §2.1.1, from the first `size` leaf hashes."""
    _check_sizes(index, size, len(leaves))

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*path(m, lo, lo + k), _mth(leaves, lo + k, hi)]
        return [*path(m - k, lo + k, hi), _mth(leaves, lo, lo + k)]

    return path(index, 0, size)


def consistency_proof(first: int, second: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(first, D[second]) of RFC 6962 §2.1.2, from the first `second` leaf hashes."""
    if not (1 <= first <= second <= len(leaves)):
        raise RequestInvalid("The requested tree sizes do not fit the log.")

    def subproof(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [_mth(leaves, lo, hi)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, lo, lo + k, complete), _mth(leaves, lo + k, hi)]
        return [*subproof(m - k, lo + k, hi, False), _mth(leaves, lo, lo + k)]

    return subproof(first, 0, second, True)


def _hashes(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_LENGTH or any(len(p) != HASH_SIZE for p in proof):
        raise AuditVerificationFailed("A proof is a short list of 32-byte hashes.")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """RFC 9162 §2.1.3.2: `leaf` (a leaf hash) is at `index` of the tree of `size` leaves
    whose root is `root_hash`. Raises
    `AuditVerificationFailed` otherwise."""
    _hashes(proof)
    if not 0 <= index < size or len(leaf) != HASH_SIZE:
        raise AuditVerificationFailed("The leaf index is outside the tree.")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise AuditVerificationFailed("The inclusion proof is too long.")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not (fn & 1 or fn == 0):
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or r != root_hash:
        raise AuditVerificationFailed("The inclusion proof does not lead to the root.")


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """RFC 9162 §2.1.4.2: the tree of `first` leaves (root `first_root`) is a prefix of the
    tree of `second` leaves (root `second_root`). Raises
    `AuditVerificationFailed` otherwise."""
    _hashes(proof)
    if not 1 <= first <= second:
        raise AuditVerificationFailed("Consistency is proved between sizes 1 <= first <= second.")
    if first == second:
        if proof or first_root != second_root:
            raise AuditVerificationFailed("Equal sizes must have equal roots and an empty proof.")
        return
    if not proof:
        raise AuditVerificationFailed("The consistency proof is empty.")
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a node of the new
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise AuditVerificationFailed("The consistency proof is too long.")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not (fn & 1 or fn == 0):
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise AuditVerificationFailed("The consistency proof does not join the two roots.")
