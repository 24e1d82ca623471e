//! Conformance of the Merkle tree with the RFC 6962 / RFC 9162 reference vectors
//! (the Certificate Transparency test data also used by Trillian) and exhaustive
//! proof checks over small trees.

use super::*;

/// The eight reference leaves of the CT tree-hash tests.
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// Published roots for tree sizes 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Published inclusion proofs: (leaf index, tree size, path). The source lists
/// leaves 1-based; these are 0-based.
const INCLUSION: [(u64, u64, &[&str]); 5] = [
    (0, 1, &[]),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// Published consistency proofs: (first, second, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

fn h(hex_str: &str) -> Hash {
    let mut out = [0u8; 32];
    let bytes = hex::decode(hex_str).unwrap_or_default();
    assert_eq!(bytes.len(), 32, "bad test vector {hex_str}");
    out.copy_from_slice(&bytes);
    out
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn reference_tree() -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in LEAVES {
        tree.push(leaf_hash(leaf));
    }
    tree
}

fn tree_of(n: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    tree
}

/// The RFC's recursive definition, straight from the text, as an oracle.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

#[test]
fn roots_match_the_published_vectors() {
    let tree = reference_tree();
    for (size, expected) in ROOTS.iter().enumerate() {
        assert_eq!(tree.root(size as u64), Ok(h(expected)), "size {size}");
    }
    assert_eq!(
        tree.root(9),
        Err(ProofError::OutOfRange("tree size beyond the log"))
    );
}

#[test]
fn inclusion_proofs_match_the_published_vectors() {
    let tree = reference_tree();
    for (index, size, path) in INCLUSION {
        let expected = hashes(path);
        assert_eq!(
            tree.inclusion_proof(index, size),
            Ok(expected.clone()),
            "{index}/{size}"
        );
        let root = h(ROOTS[size as usize]);
        let leaf = leaf_hash(LEAVES[index as usize]);
        assert_eq!(
            verify_inclusion(&leaf, index, size, &expected, &root),
            Ok(())
        );
    }
}

#[test]
fn consistency_proofs_match_the_published_vectors() {
    let tree = reference_tree();
    for (first, second, path) in CONSISTENCY {
        let expected = hashes(path);
        assert_eq!(tree.consistency_proof(first, second), Ok(expected.clone()));
        let (r1, r2) = (h(ROOTS[first as usize]), h(ROOTS[second as usize]));
        assert_eq!(
            verify_consistency(first, second, &r1, &r2, &expected),
            Ok(())
        );
    }
}

#[test]
fn stored_levels_agree_with_the_recursive_definition() {
    // 300 leaves crosses several stored levels (16, 32, ... 256) and ragged edges.
    let tree = tree_of(300);
    let leaves: Vec<Hash> = (0..300).filter_map(|i| tree.leaf(i)).collect();
    for size in 0..=300u64 {
        assert_eq!(
            tree.root(size),
            Ok(mth(&leaves[..size as usize])),
            "size {size}"
        );
    }
}

#[test]
fn every_inclusion_proof_up_to_64_verifies_and_tampering_fails() {
    let tree = tree_of(64);
    for size in 1..=64u64 {
        let root = tree.root(size).unwrap_or_default();
        for index in 0..size {
            let leaf = tree.leaf(index).unwrap_or_default();
            let proof = tree.inclusion_proof(index, size).unwrap_or_default();
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
            // Wrong index, wrong size, wrong leaf, wrong root, flipped hash,
            // extra and missing hashes must all fail.
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
            // Wrong tree sizes (the probes of the CT/Trillian verifier tests).
            assert!(verify_inclusion(&leaf, index, size * 2, &proof, &root).is_err());
            if index < size / 2 {
                assert!(verify_inclusion(&leaf, index, size / 2, &proof, &root).is_err());
            }
            assert!(verify_inclusion(&leaf_hash(b"x"), index, size, &proof, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size, &proof, &empty_root()).is_err());
            let mut extended = proof.clone();
            extended.push(root);
            assert!(verify_inclusion(&leaf, index, size, &extended, &root).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 8;
                assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
            if !proof.is_empty() {
                let short = &proof[..proof.len() - 1];
                assert!(verify_inclusion(&leaf, index, size, short, &root).is_err());
            }
        }
    }
}

#[test]
fn every_consistency_proof_up_to_64_verifies_and_tampering_fails() {
    let tree = tree_of(64);
    let roots: Vec<Hash> = (0..=64).map(|n| tree.root(n).unwrap_or_default()).collect();
    for second in 0..=64u64 {
        for first in 0..=second {
            let proof = tree.consistency_proof(first, second).unwrap_or_default();
            let (r1, r2) = (roots[first as usize], roots[second as usize]);
            assert_eq!(
                verify_consistency(first, second, &r1, &r2, &proof),
                Ok(()),
                "{first}->{second}"
            );
            if first == 0 || first == second {
                continue;
            }
            assert!(verify_consistency(first, second, &r2, &r2, &proof).is_err());
            assert!(verify_consistency(first, second, &r1, &r1, &proof).is_err());
            assert!(verify_consistency(first, second, &r1, &r2, &[]).is_err());
            if first > 1 {
                assert!(verify_consistency(first - 1, second, &r1, &r2, &proof).is_err());
            }
            let mut extended = proof.clone();
            extended.push(r1);
            assert!(verify_consistency(first, second, &r1, &r2, &extended).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 16;
                assert!(verify_consistency(first, second, &r1, &r2, &bad).is_err());
            }
        }
    }
}

#[test]
fn out_of_range_requests_are_errors_not_panics() {
    let tree = tree_of(5);
    assert!(tree.inclusion_proof(5, 5).is_err());
    assert!(tree.inclusion_proof(0, 6).is_err());
    assert!(tree.inclusion_proof(0, 0).is_err());
    assert!(tree.consistency_proof(3, 2).is_err());
    assert!(tree.consistency_proof(1, 6).is_err());
    assert!(verify_inclusion(&[0; 32], 0, 0, &[], &[0; 32]).is_err());
    assert!(verify_inclusion(&[0; 32], u64::MAX, 1, &[], &[0; 32]).is_err());
    assert!(verify_consistency(2, 1, &[0; 32], &[0; 32], &[]).is_err());
    assert!(verify_consistency(1, u64::MAX, &[0; 32], &[0; 32], &[[0; 32]; 70]).is_err());
}
