//! The decision table: what [`PolicyIndex::decide`](super::PolicyIndex::decide)
//! reads, laid out so that one decision touches few cache lines.
//!
//! A decision over 100k grants is bound by cache misses, not by work: with
//! requests spread over many grants nearly every dependent load misses, and
//! on the development VM a miss costs 100-200 ns once the working set passes
//! about 16 MiB. The table therefore keeps the per-(consumer, service) data
//! flat and contiguous, so a decision is one probe and one pair of
//! overlapping loads instead of a chain of about ten:
//!
//! - one open-addressing array of [`Slot`]s keyed by a single hash of the
//!   (consumer, service) pair: a lookup is one probe, usually one cache line;
//! - the slot names its key's bytes (consumer then service, in one arena) and
//!   its run of [`Rule`]s; both addresses come from the slot, so the two
//!   loads that follow it are independent and overlap;
//! - a rule is one cache line holding what the decision checks of a grant:
//!   status, validity, and its legal-basis ids and purpose codes as indices
//!   into one small table of distinct names, which every decision shares and
//!   so stays in cache.
//!
//! Invariants:
//! - *Equality is exact*: a slot matches only when its stored consumer and
//!   service bytes equal the request's, and a basis or purpose matches only
//!   when its name equals the request's header; the hash only chooses where
//!   to look.
//! - A rule mirrors its grant: the rules of a pair are the non-revoked grants
//!   naming it, in ascending grant index (so by id), with the grant's own
//!   status, dates, bases and purposes. A grant with more names than a rule
//!   holds inline is marked, and its names are read from the grant itself.
//! - Lookups allocate nothing and take no lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use foldhash::fast::FixedState;

use super::{Grant, GrantStatus};

/// Basis ids plus purpose codes a rule holds inline; a grant with more is
/// checked against the grant itself. Ten fill the rule's cache line; the
/// shipped grants have at most five.
const INLINE_NAMES: usize = 10;

/// Rule flag: the grant is suspended (otherwise active; revoked grants have
/// no rules).
const SUSPENDED: u8 = 1;
/// Rule flag: the grant has no `valid_until`.
const OPEN_ENDED: u8 = 2;
/// Rule flag: the grant's names did not fit in `names`; ask the grant.
const SPILLED: u8 = 4;

/// The compiled (consumer, service) → rules table of a [`super::PolicyIndex`].
#[derive(Debug)]
pub(super) struct DecisionTable {
    /// Open addressing with linear probing; the length is a power of two and
    /// at least twice the number of pairs, so probes stay short.
    slots: Box<[Slot]>,
    /// The consumer and service bytes of every pair, back to back.
    keys: Box<[u8]>,
    /// Every pair's rules, each pair's contiguous.
    rules: Box<[Rule]>,
    /// Distinct legal-basis ids and purpose codes, indexed by
    /// [`Rule::names`].
    names: Box<[Box<str>]>,
    /// Per-table random hash seed, so slot positions cannot be predicted.
    seed: u64,
    /// Applied to every hash; all ones except in tests, which clear it to
    /// force every pair into one probe chain.
    hash_mask: u64,
}

/// One (consumer, service) pair, or an empty slot (`rule_count == 0`).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    hash: u64,
    /// Offset of the consumer bytes in `keys`; the service follows them.
    key: u32,
    consumer_len: u32,
    service_len: u32,
    /// Index of the pair's first rule in `rules`.
    rules: u32,
    rule_count: u32,
}

// A slot is half a cache line and a rule one, so neither straddles two: a
// field added that makes them larger costs a miss per decision.
const _: () = assert!(size_of::<Slot>() == 32 && size_of::<Rule>() == 64);

/// What the decision checks of one grant, in one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Rule {
    valid_from: i64,
    /// Exclusive; meaningless when `OPEN_ENDED` is set.
    valid_until: i64,
    /// Index of the grant in [`super::PolicyIndex`]'s `grants`.
    grant: u32,
    flags: u8,
    /// `names[..bases]` are legal-basis ids.
    bases: u8,
    /// `names[bases..bases + purposes]` are purpose codes.
    purposes: u8,
    names: [u32; INLINE_NAMES],
}

/// The table cannot be indexed with 32-bit offsets (more than 4 GiB of keys
/// or four billion rules or names).
#[derive(Debug)]
pub(super) struct TooLarge;

impl DecisionTable {
    /// Builds the table from every loaded grant (sorted by id); revoked grants
    /// are left out.
    pub(super) fn build(grants: &[Grant]) -> Result<DecisionTable, TooLarge> {
        Self::build_with_mask(grants, u64::MAX)
    }

    fn build_with_mask(grants: &[Grant], hash_mask: u64) -> Result<DecisionTable, TooLarge> {
        let mut table = DecisionTable {
            slots: Box::default(),
            keys: Box::default(),
            rules: Box::default(),
            names: Box::default(),
            seed: RandomState::new().hash_one(0x6d63_6f6e_6e65_6374_u64),
            hash_mask,
        };
        // Loading is bound by cache misses on the grants' scattered strings,
        // so each is read as few times as possible and in grant order, which
        // for policy files written in id order is the order they were
        // allocated in: one pass compiles every grant's rule, one hashes and
        // groups every (grant, service), one copies each pair's key.
        let mut interner = Interner::default();
        let compiled = grants
            .iter()
            .enumerate()
            .map(|(i, grant)| Rule::new(i, grant, &mut interner))
            .collect::<Result<Vec<Rule>, TooLarge>>()?;

        // Pairs in order of first appearance; each (grant, service) named
        // with its pair's number. Revoked grants are left out.
        let mut pair_of: HashMap<PairKey<'_>, u32, FixedState> = HashMap::default();
        let mut pairs: Vec<PairKey<'_>> = Vec::new();
        let mut members: Vec<(u32, u32)> = Vec::new();
        for (i, grant) in grants.iter().enumerate() {
            if grant.status == GrantStatus::Revoked {
                continue;
            }
            for service in &grant.services {
                let key = PairKey {
                    hash: table.hash(&grant.consumer, service),
                    consumer: &grant.consumer,
                    service,
                };
                let next = offset(pairs.len())?;
                let pair = *pair_of.entry(key).or_insert(next);
                if pair == next {
                    pairs.push(key);
                }
                members.push((pair, offset(i)?));
            }
        }
        drop(pair_of);

        // Each pair's rules contiguous and, since `members` is in grant
        // order, by grant index: a counting sort by pair.
        let mut starts = vec![0_usize; pairs.len() + 1];
        for &(pair, _) in &members {
            starts[pair as usize + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        let mut order = vec![0_u32; members.len()];
        let mut next = starts.clone();
        for &(pair, grant) in &members {
            order[next[pair as usize]] = grant;
            next[pair as usize] += 1;
        }
        let rules = order
            .iter()
            .map(|&grant| compiled[grant as usize])
            .collect::<Vec<Rule>>();

        let mut slots = vec![Slot::default(); (pairs.len() * 2).max(8).next_power_of_two()];
        let mask = slots.len() - 1;
        let mut keys: Vec<u8> = Vec::new();
        for (p, pair) in pairs.iter().enumerate() {
            let slot = Slot {
                hash: pair.hash,
                key: offset(keys.len())?,
                consumer_len: offset(pair.consumer.len())?,
                service_len: offset(pair.service.len())?,
                rules: offset(starts[p])?,
                rule_count: offset(starts[p + 1] - starts[p])?,
            };
            keys.extend_from_slice(pair.consumer.as_bytes());
            keys.extend_from_slice(pair.service.as_bytes());
            let mut at = slot.hash as usize & mask;
            while slots[at].rule_count != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = slot;
        }
        table.slots = slots.into_boxed_slice();
        table.keys = keys.into_boxed_slice();
        table.rules = rules.into_boxed_slice();
        table.names = interner.names.into_boxed_slice();
        Ok(table)
    }

    /// The rules of (consumer, service): the non-revoked grants naming the
    /// pair, by grant index; empty when there are none.
    pub(super) fn rules(&self, consumer: &str, service: &str) -> &[Rule] {
        let hash = self.hash(consumer, service);
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            if slot.rule_count == 0 {
                return &[];
            }
            if slot.hash == hash && self.key_is(slot, consumer, service) {
                let start = slot.rules as usize;
                return self
                    .rules
                    .get(start..start + slot.rule_count as usize)
                    .unwrap_or_default();
            }
            at = (at + 1) & mask;
        }
    }

    /// Whether `basis` is one of the rule's grant's legal bases.
    pub(super) fn has_basis(&self, rule: &Rule, basis: &str, grants: &[Grant]) -> bool {
        if rule.flags & SPILLED != 0 {
            return grants[rule.grant()].has_basis(basis);
        }
        let ids = rule.names.get(..usize::from(rule.bases));
        self.any_name(ids.unwrap_or_default(), basis)
    }

    /// Whether `reason` is one of the rule's grant's purposes.
    pub(super) fn has_purpose(&self, rule: &Rule, reason: &str, grants: &[Grant]) -> bool {
        if rule.flags & SPILLED != 0 {
            return grants[rule.grant()].has_purpose(reason);
        }
        let start = usize::from(rule.bases);
        let ids = rule.names.get(start..start + usize::from(rule.purposes));
        self.any_name(ids.unwrap_or_default(), reason)
    }

    fn any_name(&self, ids: &[u32], wanted: &str) -> bool {
        ids.iter().any(|&id| {
            self.names
                .get(id as usize)
                .is_some_and(|name| **name == *wanted)
        })
    }

    fn key_is(&self, slot: &Slot, consumer: &str, service: &str) -> bool {
        let start = slot.key as usize;
        let split = start + slot.consumer_len as usize;
        let end = split + slot.service_len as usize;
        self.keys.get(start..split) == Some(consumer.as_bytes())
            && self.keys.get(split..end) == Some(service.as_bytes())
    }

    /// One hash of both strings (foldhash, keyed by the table's seed). `str`
    /// hashes with a terminator, so ("ab", "c") and ("a", "bc") differ.
    fn hash(&self, consumer: &str, service: &str) -> u64 {
        FixedState::with_seed(self.seed).hash_one((consumer, service)) & self.hash_mask
    }
}

impl Rule {
    fn new(index: usize, grant: &Grant, interner: &mut Interner) -> Result<Rule, TooLarge> {
        let mut flags = match grant.status {
            GrantStatus::Suspended => SUSPENDED,
            GrantStatus::Active | GrantStatus::Revoked => 0,
        };
        if grant.valid_until.is_none() {
            flags |= OPEN_ENDED;
        }
        let mut names = [0; INLINE_NAMES];
        let (mut bases, mut purposes) = (0, 0);
        let count = grant.legal_bases.len() + grant.purposes.len();
        if count > INLINE_NAMES {
            flags |= SPILLED;
        } else {
            let all = grant
                .legal_bases
                .iter()
                .map(|basis| basis.id.as_str())
                .chain(grant.purposes.iter().map(|purpose| purpose.code.as_str()));
            for (slot, name) in names.iter_mut().zip(all) {
                *slot = interner.id(name)?;
            }
            // Both fit in a u8: their sum is at most INLINE_NAMES.
            bases = u8::try_from(grant.legal_bases.len()).map_err(|_| TooLarge)?;
            purposes = u8::try_from(grant.purposes.len()).map_err(|_| TooLarge)?;
        }
        Ok(Rule {
            valid_from: grant.valid_from,
            valid_until: grant.valid_until.unwrap_or(i64::MAX),
            grant: offset(index)?,
            flags,
            bases,
            purposes,
            names,
        })
    }

    /// Index of the grant this rule stands for.
    pub(super) fn grant(&self) -> usize {
        self.grant as usize
    }

    /// Whether the grant is active (not suspended).
    pub(super) fn is_active(&self) -> bool {
        self.flags & SUSPENDED == 0
    }

    /// [`Grant::in_date`] of the grant.
    pub(super) fn in_date(&self, now_unix: i64) -> bool {
        self.valid_from <= now_unix && (self.flags & OPEN_ENDED != 0 || now_unix < self.valid_until)
    }

    /// The grant's `valid_from`.
    pub(super) fn valid_from(&self) -> i64 {
        self.valid_from
    }
}

/// Gives each distinct basis id or purpose code a small number, once.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32, FixedState>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn id(&mut self, name: &str) -> Result<u32, TooLarge> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let id = offset(self.names.len())?;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Ok(id)
    }
}

/// A (consumer, service) pair while the table is built, with its table
/// hash, which the grouping map reuses rather than hashing the strings again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PairKey<'a> {
    hash: u64,
    consumer: &'a str,
    service: &'a str,
}

impl Hash for PairKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

fn offset(n: usize) -> Result<u32, TooLarge> {
    u32::try_from(n).map_err(|_| TooLarge)
}

#[cfg(test)]
mod tests;
