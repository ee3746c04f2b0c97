"""RFC 6962 trees: every proof for every position verifies; any change makes it fail."""

import hashlib

import pytest

from domain.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    RecentPrefixes,
    consistency_from,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [leaf_hash(f"event {i}".encode()) for i in range(40)]


def test_known_shapes() -> None:
    a, b, c = LEAVES[:3]
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert root([a]) == a
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()


# RFC 6962 reference: the CT test vectors over the leaves "", "\x00", "\x10", ...
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOT_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_matches_the_certificate_transparency_vectors() -> None:
    assert root([leaf_hash(x) for x in CT_LEAVES]).hex() == CT_ROOT_8


@pytest.mark.parametrize("size", range(1, 41))
def test_every_inclusion_proof_verifies(size: int) -> None:
    tree = LEAVES[:size]
    head = root(tree)
    for index in range(size):
        proof = inclusion_proof(index, tree)
        assert verify_inclusion(index, size, tree[index], proof, head)
        assert not verify_inclusion(index, size, leaf_hash(b"forged"), proof, head)
        if proof:
            assert not verify_inclusion(index, size, tree[index], proof[:-1], head)
        if size > 1:
            assert not verify_inclusion((index + 1) % size, size, tree[index], proof, head)


@pytest.mark.parametrize("new_size", range(1, 41))
def test_every_consistency_proof_verifies(new_size: int) -> None:
    new_root = root(LEAVES[:new_size])
    for old_size in range(1, new_size + 1):
        old_root = root(LEAVES[:old_size])
        proof = consistency_proof(old_size, LEAVES[:new_size])
        assert verify_consistency(old_size, new_size, old_root, new_root, proof)
        assert not verify_consistency(old_size, new_size, leaf_hash(b"x"), new_root, proof)
        if old_size < new_size:
            rewritten = [*LEAVES[:new_size]]
            rewritten[old_size - 1] = leaf_hash(b"rewritten")
            assert not verify_consistency(old_size, new_size, old_root, root(rewritten), proof)


def test_the_frontier_gives_every_prefix_root() -> None:
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for size, leaf in enumerate(LEAVES, start=1):
        frontier.append(leaf)
        assert frontier.root() == root(LEAVES[:size])


def test_a_grown_tree_still_proves_its_earlier_sizes() -> None:
    tree = MerkleTree(LEAVES)
    for size in range(1, 41):
        assert tree.root(size) == root(LEAVES[:size])
        for index in (0, size // 2, size - 1):
            assert tree.inclusion_proof(index, size) == inclusion_proof(index, LEAVES[:size])
        for old in (1, size // 2 or 1, size):
            assert tree.consistency_proof(old, size) == consistency_proof(old, LEAVES[:size])


def test_consistency_from_the_old_peaks_equals_the_whole_tree_proof() -> None:
    leaves = [leaf_hash(bytes([i % 256, i // 256])) for i in range(70)]
    for m in range(1, 70):
        base = Frontier()
        for leaf in leaves[:m]:
            base.append(leaf)
        for n in range(m + 1, 71):
            expected = MerkleTree(leaves[:n]).consistency_proof(m)
            assert consistency_from(base, leaves[m:n]) == expected, (m, n)
    assert consistency_from(Frontier(), leaves[:3]) == []


def test_recent_prefixes_give_any_kept_prefix_root() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(40)]
    full = MerkleTree(leaves)
    recent = RecentPrefixes(kept=16)
    for leaf in leaves[:10]:
        recent.append(leaf)
    assert recent.forget_before(6) and not recent.forget_before(5)
    assert [recent.root_at(m) for m in (5, 6, 10, 11)] == [None, full.root(6), full.root(10), None]
    for leaf in leaves[10:]:
        recent.append(leaf)
    assert recent.size == 40 and len(recent.since) <= 16
    assert recent.root_at(40) == full.root(40) and recent.root_at(recent.base.size - 1) is None
