//! A UDP thread's answer cache: encoded answers by cache key (see `wire::parse_query`), so a
//! repeated question costs a hash, one set of tags and a copy instead of a lookup and an encode.
//!
//! Shape: a set-associative table. A key's hash picks one set of [`WAYS`] slots; the set's tags
//! (the hashes of what its slots hold) share one cache line, so a lookup reads one line of tags
//! and, on a tag match, one slot's bytes. When a set is full, the slot to reuse is picked by the
//! CLOCK rule (a slot read since the hand last passed it gets a second chance), so an eviction
//! costs one slot, never the whole cache, and a stream of names seen once (NXDOMAIN noise) cannot
//! push out more than the sets it lands in.
//!
//! Why not a `HashMap`: it needs an allocation per entry and, to stay bounded, either a full
//! clear (every hot answer re-encoded after it) or an LRU list. Here a slot's buffer is reused by
//! the entry that replaces it, so a warm cache allocates nothing, and the work per lookup is
//! bounded whatever the keys (the hash is seeded per cache, so a client cannot aim its names at
//! one set either).
//!
//! Invariants:
//! - a slot whose tag is 0 is empty; a full slot's tag is its key's hash with the low bit set,
//!   so no full slot has tag 0;
//! - a full slot's `bytes` hold its key, then its answer; `key_len` says where the key ends. A
//!   slot keeps its buffer's capacity for the next entry; since a key always lands in the same
//!   set, a large answer can only ever enlarge the buffers of its own set's slots;
//! - [`AnswerCache::reset`] empties every slot: after it nothing cached before is returned (the
//!   server calls it when the catalog changes, before answering from the new one).

use std::hash::{BuildHasher, RandomState};

/// Slots per set: 8 tags of 8 bytes are one 64-byte cache line.
pub(crate) const WAYS: usize = 8;
/// Slots per cache, at most (about 16 MiB of answers when all are full), whatever the catalog.
pub(crate) const MAX_SLOTS: usize = 1 << 18;

/// One set's tags, on a cache line of their own.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct Tags([u64; WAYS]);

#[derive(Default)]
struct Slot {
    /// The key, then the answer.
    bytes: Vec<u8>,
    key_len: usize,
    /// What the engine said with the answer: where the zone starts in the name (`engine.rs`).
    zone_at: u8,
}

/// A key's hash, computed once per query and used for both lookup and insertion.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash(u64);

/// The cache of one UDP thread; not shared, so it takes no lock.
pub(crate) struct AnswerCache {
    tags: Vec<Tags>,
    slots: Vec<Slot>,
    /// Per set: bit `i` set if slot `i` was read since the clock hand last passed it.
    referenced: Vec<u8>,
    /// Per set: the slot the CLOCK hand points at.
    hands: Vec<u8>,
    seed: u64,
}

impl AnswerCache {
    /// An empty cache of at least `slots` slots (rounded up to whole sets and a power of two, at
    /// most [`MAX_SLOTS`]).
    pub(crate) fn new(slots: usize) -> Self {
        let sets = Self::sets_for(slots);
        Self {
            tags: vec![Tags::default(); sets],
            slots: (0..sets * WAYS).map(|_| Slot::default()).collect(),
            referenced: vec![0; sets],
            hands: vec![0; sets],
            seed: random_seed(),
        }
    }

    fn sets_for(slots: usize) -> usize {
        slots
            .clamp(WAYS, MAX_SLOTS)
            .div_ceil(WAYS)
            .next_power_of_two()
    }

    /// Slots in the cache.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Empties the cache, resized to at least `slots` slots. Keeps the slots' buffers when the
    /// size does not change, so refilling after a snapshot allocates nothing.
    pub(crate) fn reset(&mut self, slots: usize) {
        if Self::sets_for(slots) == self.tags.len() {
            self.tags.fill(Tags::default());
            self.referenced.fill(0);
            self.hands.fill(0);
        } else {
            *self = Self::new(slots);
        }
    }

    /// The hash of `key`.
    pub(crate) fn hash(&self, key: &[u8]) -> KeyHash {
        KeyHash(hash_bytes(self.seed, key) | 1)
    }

    fn set_of(&self, hash: KeyHash) -> usize {
        // The tag keeps the low bits; the set index takes the high ones.
        (hash.0 >> 32) as usize & (self.tags.len() - 1)
    }

    /// The answer cached for `key` (whose hash is `hash`), and the `zone_at` it was cached with.
    pub(crate) fn get(&mut self, hash: KeyHash, key: &[u8]) -> Option<(&[u8], u8)> {
        let set = self.set_of(hash);
        for (way, &tag) in self.tags[set].0.iter().enumerate() {
            if tag != hash.0 {
                continue;
            }
            let slot = &self.slots[set * WAYS + way];
            if slot.bytes.get(..slot.key_len) == Some(key) {
                self.referenced[set] |= 1 << way;
                return slot.bytes.get(slot.key_len..).map(|a| (a, slot.zone_at));
            }
        }
        None
    }

    /// Caches `answer` for `key` (not cached yet), replacing an entry of its set if the set is
    /// full.
    pub(crate) fn insert(&mut self, hash: KeyHash, key: &[u8], answer: &[u8], zone_at: u8) {
        let set = self.set_of(hash);
        let way = match self.tags[set].0.iter().position(|&tag| tag == 0) {
            Some(empty) => empty,
            None => self.victim(set),
        };
        let slot = &mut self.slots[set * WAYS + way];
        slot.bytes.clear();
        slot.bytes.extend_from_slice(key);
        slot.bytes.extend_from_slice(answer);
        slot.key_len = key.len();
        slot.zone_at = zone_at;
        self.tags[set].0[way] = hash.0;
        self.referenced[set] &= !(1 << way);
    }

    /// CLOCK: the first slot from the hand on that was not read since the hand last passed it,
    /// clearing the marks it passes; the hand then points past it.
    fn victim(&mut self, set: usize) -> usize {
        let mut way = usize::from(self.hands[set]) % WAYS;
        // Two turns at most: the first clears every mark.
        for _ in 0..2 * WAYS {
            if self.referenced[set] & (1 << way) == 0 {
                break;
            }
            self.referenced[set] &= !(1 << way);
            way = (way + 1) % WAYS;
        }
        self.hands[set] = ((way + 1) % WAYS) as u8;
        way
    }
}

/// A seed for [`hash_bytes`], different in every table and process, so a client cannot aim its
/// names at one set of a table.
pub(crate) fn random_seed() -> u64 {
    RandomState::new().hash_one(0x746f_7263_u64)
}

/// A 64-bit hash of `bytes`: FxHash-style word mixing, then a full avalanche (murmur3's
/// finalizer) so that every bit of the result depends on every byte. Not for adversaries who can
/// see the hashes; the seed keeps them from predicting sets.
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("\x06h{i:05}\x05bench\x04test\x00").into_bytes()
    }

    #[test]
    fn returns_what_was_inserted_and_nothing_else() {
        let mut cache = AnswerCache::new(64);
        for i in 0..40 {
            let k = key(i);
            let h = cache.hash(&k);
            assert!(cache.get(h, &k).is_none());
            cache.insert(h, &k, format!("answer {i}").as_bytes(), 0);
        }
        let mut hits = 0;
        for i in 0..40 {
            let k = key(i);
            let h = cache.hash(&k);
            if let Some((answer, _)) = cache.get(h, &k) {
                assert_eq!(answer, format!("answer {i}").as_bytes());
                hits += 1;
            }
        }
        // 40 keys in 64 slots: a set may overflow, but most stay.
        assert!(hits >= 30, "{hits} hits");
        // A key that shares a prefix with a cached one is a different key.
        let k = b"\x06h00001\x05bench".to_vec();
        let h = cache.hash(&k);
        assert!(cache.get(h, &k).is_none());
    }

    #[test]
    fn stays_bounded_and_keeps_hot_entries() {
        let mut cache = AnswerCache::new(1024);
        assert_eq!(cache.capacity(), 1024);
        let hot: Vec<_> = (0..256).map(key).collect();
        for k in &hot {
            let h = cache.hash(k);
            cache.insert(h, k, b"hot", 0);
        }
        // A long stream of names seen once, the hot names read between them.
        for i in 0..100_000 {
            let k = key(1_000 + i);
            let h = cache.hash(&k);
            if cache.get(h, &k).is_none() {
                cache.insert(h, &k, b"cold", 0);
            }
            let k = &hot[i % hot.len()];
            let h = cache.hash(k);
            if cache.get(h, k).is_none() {
                cache.insert(h, k, b"hot", 0);
            }
        }
        let hits = hot
            .iter()
            .filter(|k| cache.get(cache.hash(k), k) == Some((&b"hot"[..], 0)))
            .count();
        assert!(hits >= 200, "{hits} of 256 hot names cached");
        assert_eq!(cache.capacity(), 1024);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut cache = AnswerCache::new(100);
        let k = key(7);
        let h = cache.hash(&k);
        cache.insert(h, &k, b"old", 3);
        assert_eq!(cache.get(h, &k), Some((&b"old"[..], 3)));
        cache.reset(100);
        assert!(cache.get(h, &k).is_none());
        cache.reset(5_000);
        assert!(cache.capacity() >= 5_000);
        let h = cache.hash(&k);
        assert!(cache.get(h, &k).is_none());
    }
}
