"""RFC 6962 Merkle hashing and proofs (pdo.core.merkle): Certificate Transparency's reference roots, and
every inclusion and consistency proof of randomly grown logs verifies, while tampered ones do not."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdo.core import merkle

# The reference inputs and roots of Certificate Transparency's Merkle tree tests (RFC 6962): the root of
# the tree over the first n leaves, n = 1..8.
CT_LEAVES = [
    b"",
    bytes.fromhex("00"),
    bytes.fromhex("10"),
    bytes.fromhex("2021"),
    bytes.fromhex("3031"),
    bytes.fromhex("40414243"),
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_HASHES = [merkle.leaf_hash(leaf) for leaf in CT_LEAVES]


def test_the_empty_tree_has_the_hash_of_the_empty_string():
    assert merkle.root([]) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_certificate_transparency_reference_tree(size):
    assert merkle.root(CT_HASHES[:size]).hex() == CT_ROOTS[size - 1]


def test_inclusion_proof_of_the_reference_tree_names_the_known_siblings():
    # Leaf 0 of 8: its sibling leaf, then the roots of leaves 2..3 and 4..7.
    proof = merkle.inclusion_proof(0, CT_HASHES)
    assert proof[0] == CT_HASHES[1]
    assert proof[1] == merkle.root(CT_HASHES[2:4])
    assert proof[2] == merkle.root(CT_HASHES[4:8])


def test_a_proof_against_another_index_leaf_or_out_of_range_fails():
    proof = merkle.inclusion_proof(5, CT_HASHES)
    root = merkle.root(CT_HASHES)
    assert merkle.verify_inclusion(CT_HASHES[5], 5, 8, proof, root)
    assert not merkle.verify_inclusion(CT_HASHES[5], 4, 8, proof, root)
    assert not merkle.verify_inclusion(CT_HASHES[4], 5, 8, proof, root)
    assert not merkle.verify_inclusion(CT_HASHES[5], 8, 8, proof, root)


def test_consistency_fails_for_a_rewritten_prefix():
    rewritten = [merkle.leaf_hash(b"forged")] + CT_HASHES[1:]
    proof = merkle.consistency_proof(3, CT_HASHES)
    assert merkle.verify_consistency(3, 8, merkle.root(CT_HASHES[:3]), merkle.root(CT_HASHES), proof)
    assert not merkle.verify_consistency(3, 8, merkle.root(rewritten[:3]), merkle.root(CT_HASHES), proof)
    assert not merkle.verify_consistency(3, 8, merkle.root(CT_HASHES[:3]), merkle.root(rewritten), proof)
    assert not merkle.verify_consistency(3, 8, merkle.root(CT_HASHES[:3]), merkle.root(CT_HASHES), [])


def _flip(node: bytes) -> bytes:
    return bytes([node[0] ^ 1]) + node[1:]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=16), min_size=1, max_size=33))
def test_every_inclusion_and_consistency_proof_of_a_growing_log_verifies(entries):
    hashes = []
    for entry in entries:  # append, one entry at a time, as the log grows
        hashes.append(merkle.leaf_hash(entry))
    roots = [merkle.root(hashes[:size]) for size in range(len(hashes) + 1)]
    for size in range(1, len(hashes) + 1):
        for index in range(size):
            proof = merkle.inclusion_proof(index, hashes[:size])
            assert merkle.verify_inclusion(hashes[index], index, size, proof, roots[size])
            if proof:
                assert not merkle.verify_inclusion(
                    hashes[index], index, size, [_flip(proof[0])] + proof[1:], roots[size]
                )
    for new_size in range(len(hashes) + 1):
        for old_size in range(new_size + 1):
            proof = merkle.consistency_proof(old_size, hashes[:new_size])
            assert merkle.verify_consistency(old_size, new_size, roots[old_size], roots[new_size], proof)
            if proof:
                assert not merkle.verify_consistency(
                    old_size, new_size, roots[old_size], roots[new_size], proof[:-1] + [_flip(proof[-1])]
                )
