"""The RFC 6962 Merkle tree: known-answer vectors, then properties over many tree sizes
(every leaf's inclusion proof verifies for every size; consistency between any two sizes), then
refusals (any changed hash, index, size or root fails; malformed proofs fail closed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantguard.audit import merkle
from tenantguard.errors import AuditVerificationFailed, RequestInvalid

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "rfc6962" / "vectors.json").read_text()
)
LEAVES = [merkle.leaf_hash(bytes.fromhex(h)) for h in VECTORS["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in VECTORS["roots"]]


def test_empty_tree_and_every_root_match_the_reference() -> None:
    assert merkle.root([]).hex() == VECTORS["empty_root"]
    for size in range(1, len(LEAVES) + 1):
        assert merkle.root(LEAVES[:size]) == ROOTS[size - 1], size


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}-{c['size']}")
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    index, size = case["index"], case["size"]
    path = merkle.inclusion_proof(index, size, LEAVES)
    assert [p.hex() for p in path] == case["path"]
    merkle.verify_inclusion(index, size, LEAVES[index], path, ROOTS[size - 1])


@pytest.mark.parametrize(
    "case", VECTORS["consistency"], ids=lambda c: f"{c['first']}-{c['second']}"
)
def test_consistency_vectors(case: dict[str, Any]) -> None:
    first, second = case["first"], case["second"]
    path = merkle.consistency_proof(first, second, LEAVES)
    assert [p.hex() for p in path] == case["path"]
    merkle.verify_consistency(first, second, path, ROOTS[first - 1], ROOTS[second - 1])


def _leaves(n: int, salt: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(f"{salt}:{i}".encode()).digest()) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.integers(min_value=0, max_value=2**16))
def test_every_inclusion_proof_verifies_in_every_tree_size(n: int, salt: int) -> None:
    leaves = _leaves(n, salt)
    for size in range(1, n + 1):
        root = merkle.root(leaves[:size])
        for index in range(size):
            merkle.verify_inclusion(
                index, size, leaves[index], merkle.inclusion_proof(index, size, leaves), root
            )


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=48), st.integers(min_value=0, max_value=2**16))
def test_consistency_between_any_two_sizes(n: int, salt: int) -> None:
    leaves = _leaves(n, salt)
    roots = [merkle.root(leaves[:m]) for m in range(1, n + 1)]
    for first in range(1, n + 1):
        for second in range(first, n + 1):
            proof = merkle.consistency_proof(first, second, leaves)
            merkle.verify_consistency(first, second, proof, roots[first - 1], roots[second - 1])


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=40), st.data())
def test_any_change_breaks_an_inclusion_proof(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    proof = merkle.inclusion_proof(index, n, leaves)
    root = merkle.root(leaves)
    forgeries: list[tuple[int, int, bytes, list[bytes], bytes]] = [
        (index, n, _flip(leaves[index]), proof, root),  # another event
        (index, n, leaves[index], proof, _flip(root)),  # another root
        (index, n, leaves[index], [*proof, leaves[0]], root),  # a hash too many
    ]
    if proof:
        forgeries.append((index, n, leaves[index], proof[:-1], root))  # a hash too few
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        changed = [*proof[:at], _flip(proof[at]), *proof[at + 1 :]]
        forgeries.append((index, n, leaves[index], changed, root))
    other = (index + 1) % n
    if leaves[other] != leaves[index]:
        forgeries.append((other, n, leaves[index], proof, root))  # the same proof elsewhere
    for forged in forgeries:
        with pytest.raises(AuditVerificationFailed):
            merkle.verify_inclusion(*forged)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=40), st.data())
def test_any_change_breaks_a_consistency_proof(n: int, data: st.DataObject) -> None:
    """Including the rewritten-history case: a tree whose old part changed is not consistent
    with the root signed before the change."""
    leaves = _leaves(n)
    first = data.draw(st.integers(min_value=1, max_value=n - 1))
    proof = merkle.consistency_proof(first, n, leaves)
    old, new = merkle.root(leaves[:first]), merkle.root(leaves)
    rewritten = list(leaves)
    rewritten[data.draw(st.integers(min_value=0, max_value=first - 1))] = leaf_of(b"forged")
    honest_looking = merkle.consistency_proof(first, n, rewritten)
    forgeries = [
        (first, n, proof, _flip(old), new),
        (first, n, proof, old, _flip(new)),
        (first, n, [*proof, old], old, new),
        (first, n, proof[:-1], old, new),
        (first, n, honest_looking, old, merkle.root(rewritten)),
    ]
    for forged in forgeries:
        with pytest.raises(AuditVerificationFailed):
            merkle.verify_consistency(*forged)


def leaf_of(data: bytes) -> bytes:
    return merkle.leaf_hash(data)


@pytest.mark.parametrize(
    ("index", "size", "proof"),
    [
        (0, 0, []),
        (-1, 4, []),
        (4, 4, []),
        (0, 4, [b"short"]),
        (0, 2**70, [bytes(32)] * 65),
    ],
    ids=["empty tree", "negative index", "index past the end", "short hash", "too long"],
)
def test_malformed_inclusion_proofs_fail_closed(index: int, size: int, proof: list[bytes]) -> None:
    with pytest.raises(AuditVerificationFailed):
        merkle.verify_inclusion(index, size, LEAVES[0], proof, ROOTS[3])


def test_malformed_consistency_proofs_fail_closed() -> None:
    with pytest.raises(AuditVerificationFailed):
        merkle.verify_consistency(0, 4, [], merkle.EMPTY_ROOT, ROOTS[3])
    with pytest.raises(AuditVerificationFailed):
        merkle.verify_consistency(5, 4, [], ROOTS[4], ROOTS[3])  # a shorter tree: rolled back
    with pytest.raises(AuditVerificationFailed):
        merkle.verify_consistency(3, 4, [], ROOTS[2], ROOTS[3])  # an empty proof
    with pytest.raises(AuditVerificationFailed):
        merkle.verify_consistency(4, 4, [ROOTS[3]], ROOTS[3], ROOTS[3])
    merkle.verify_consistency(4, 4, [], ROOTS[3], ROOTS[3])


def test_proofs_the_log_cannot_have_are_invalid_requests() -> None:
    for args in ((8, 8), (0, 9), (-1, 3)):
        with pytest.raises(RequestInvalid):
            merkle.inclusion_proof(args[0], args[1], LEAVES)
    for first, second in ((0, 3), (4, 3), (3, 9)):
        with pytest.raises(RequestInvalid):
            merkle.consistency_proof(first, second, LEAVES)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=80), st.data())
def test_prefix_roots_in_one_pass_equal_each_tree(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    sizes = data.draw(st.lists(st.integers(min_value=0, max_value=n), max_size=10))
    found = merkle.prefix_roots(leaves, sizes)
    assert found == {size: merkle.root(leaves[:size]) for size in set(sizes)}
