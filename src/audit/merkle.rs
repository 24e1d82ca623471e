//! The RFC 9162 section 2.1 Merkle tree over the audit leaves: tree hashes,
//! inclusion and consistency proofs, and their verification.
//!
//! Invariants: leaf hash = SHA-256(0x00 ‖ leaf), node hash = SHA-256(0x01 ‖ left ‖
//! right), the split is RFC 9162's (largest power of two smaller than n), never the
//! midpoint. The tree only grows. Every leaf hash is kept (32 B a leaf) so proofs
//! for any earlier tree size work; the roots of aligned perfect subtrees of
//! 2^[`STORED_FROM_LEVEL`] leaves and more are kept too (about 1/8 more), so a root
//! or proof costs O(log n) lookups plus a handful of hashes, never O(n).

use aws_lc_rs::digest::{Context, SHA256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Subtrees smaller than 2^this are recomputed from the leaves on demand (at most
/// 2^(this-1) - 1 hashes); larger aligned perfect subtrees are stored.
pub const STORED_FROM_LEVEL: usize = 4;

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The indices or sizes cannot describe a proof (index beyond the tree, ...).
    #[error("proof parameters are out of range: {0}")]
    OutOfRange(&'static str),
    /// The proof has the wrong number of hashes for the tree shape.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The recomputed root is not the one claimed.
    #[error("proof does not match the root hash")]
    RootMismatch,
}

/// RFC 9162 leaf hash: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(leaf);
    to_hash(ctx.finish().as_ref())
}

/// RFC 9162 interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish().as_ref())
}

/// The hash of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    to_hash(Context::new(&SHA256).finish().as_ref())
}

fn to_hash(digest: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    // SHA-256 digests are always 32 bytes; taking a prefix keeps this total.
    let n = digest.len().min(32);
    out[..n].copy_from_slice(&digest[..n]);
    out
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree holding leaf hashes and stored subtree roots.
#[derive(Debug, Default, Clone)]
pub struct MerkleTree {
    leaves: Vec<Hash>,
    /// `levels[k][i]` = root of leaves `[i * 2^k, (i + 1) * 2^k)`, for
    /// `k >= STORED_FROM_LEVEL`; lower levels are empty.
    levels: Vec<Vec<Hash>>,
    /// `frontier[k]` = root of the last complete subtree at level k that is still
    /// waiting for its right sibling; lets `push` extend the tree with one hash
    /// per completed level.
    frontier: Vec<Hash>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> MerkleTree {
        MerkleTree::default()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// True when the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The hash of leaf `index`, if it exists.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.leaves.get(usize::try_from(index).ok()?).copied()
    }

    /// Appends one leaf hash (not the leaf bytes: hash them with [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let mut index = self.leaves.len() as u64;
        self.leaves.push(leaf);
        let mut current = leaf;
        let mut level = 0usize;
        // Each trailing one bit of the index closes a perfect subtree one level up.
        while index & 1 == 1 {
            let Some(left) = self.frontier.get(level) else {
                break;
            };
            current = node_hash(left, &current);
            level += 1;
            index >>= 1;
            if level >= STORED_FROM_LEVEL {
                if self.levels.len() <= level {
                    self.levels.resize_with(level + 1, Vec::new);
                }
                self.levels[level].push(current);
            }
        }
        if self.frontier.len() <= level {
            self.frontier.resize(level + 1, [0u8; 32]);
        }
        self.frontier[level] = current;
    }

    /// MTH of the first `size` leaves (RFC 9162 2.1.1).
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.len() {
            return Err(ProofError::OutOfRange("tree size beyond the log"));
        }
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.subtree(0, size))
    }

    /// PATH(index, D[size]) of RFC 9162 2.1.3.1, leaf side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.len() {
            return Err(ProofError::OutOfRange("tree size beyond the log"));
        }
        if index >= size {
            return Err(ProofError::OutOfRange("leaf index not below tree size"));
        }
        let (mut m, mut start, mut n) = (index, 0u64, size);
        let mut path = Vec::new();
        while n > 1 {
            let k = split(n);
            if m < k {
                path.push(self.subtree(start + k, n - k));
                n = k;
            } else {
                path.push(self.subtree(start, k));
                m -= k;
                start += k;
                n -= k;
            }
        }
        path.reverse();
        Ok(path)
    }

    /// PROOF(first, D[second]) of RFC 9162 2.1.4.1. Empty when `first` is 0 or
    /// equal to `second`, where there is nothing to prove.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        if second > self.len() {
            return Err(ProofError::OutOfRange("tree size beyond the log"));
        }
        if first > second {
            return Err(ProofError::OutOfRange("first tree size above second"));
        }
        if first == 0 || first == second {
            return Ok(Vec::new());
        }
        let (mut m, mut start, mut n, mut whole) = (first, 0u64, second, true);
        let mut path = Vec::new();
        loop {
            if m == n {
                // SUBPROOF(m, D[m], b): nothing when this is the old tree itself,
                // else the old subtree's own hash.
                if !whole {
                    path.push(self.subtree(start, m));
                }
                break;
            }
            let k = split(n);
            if m <= k {
                path.push(self.subtree(start + k, n - k));
                n = k;
            } else {
                path.push(self.subtree(start, k));
                m -= k;
                start += k;
                n -= k;
                whole = false;
            }
        }
        path.reverse();
        Ok(path)
    }

    /// MTH(D[start..start + size]); callers keep the range inside the tree and
    /// `size >= 1`.
    fn subtree(&self, start: u64, size: u64) -> Hash {
        if size.is_power_of_two() && start.is_multiple_of(size) {
            return self.perfect(size.trailing_zeros() as usize, start / size);
        }
        if size <= 1 {
            return self.leaf(start).unwrap_or([0u8; 32]);
        }
        let k = split(size);
        node_hash(&self.subtree(start, k), &self.subtree(start + k, size - k))
    }

    /// Root of the aligned perfect subtree `index` at `level`.
    fn perfect(&self, level: usize, index: u64) -> Hash {
        if level == 0 {
            return self.leaf(index).unwrap_or([0u8; 32]);
        }
        if level >= STORED_FROM_LEVEL
            && let Some(hash) = self
                .levels
                .get(level)
                .and_then(|l| l.get(usize::try_from(index).ok()?))
        {
            return *hash;
        }
        node_hash(
            &self.perfect(level - 1, 2 * index),
            &self.perfect(level - 1, 2 * index + 1),
        )
    }
}

/// Verifies an inclusion proof with the algorithm of RFC 9162 2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange("leaf index not below tree size"));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof with the algorithm of RFC 9162 2.1.4.2, plus the
/// trivial cases it leaves out: `first == 0` (anything is consistent with the
/// empty tree) and `first == second` (the roots must be equal), both with an
/// empty proof.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::OutOfRange("first tree size above second"));
    }
    if first == 0 || first == second {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if first == second && first_root != second_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let Some((head, rest)) = proof.split_first() else {
        return Err(ProofError::WrongLength);
    };
    // Step 2: when first is a power of two the old root is a node of the new
    // tree and the proof starts one level higher, with first_hash implied.
    let (start, path): (Hash, &[Hash]) = if first.is_power_of_two() {
        (*first_root, proof)
    } else {
        (*head, rest)
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (start, start);
    for c in path {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *first_root || sr != *second_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
