//! Fast exact counting of one pre-token ("piece").
//!
//! `bpe`'s backtracking encoder is linear in the piece length, but every call
//! allocates two buffers and walks a 200k-state Aho-Corasick automaton; for
//! the short pieces of ordinary text (a word, a number, a run of punctuation)
//! that fixed cost dominates. Here a piece is counted with:
//!
//! 1. a lookup of the whole piece in a hash table of the vocabulary: a piece
//!    that is itself a token is one token (tiktoken takes the same shortcut,
//!    and `bpe` checks when it builds its tables that every token encodes to
//!    itself);
//! 2. otherwise, for pieces up to [`MERGE_MAX`] bytes, tiktoken's own merge
//!    loop (`byte_pair_merge`: repeatedly merge the adjacent pair of lowest
//!    rank, leftmost first), on a stack buffer, with the same rank table;
//! 3. longer pieces go to the linear long-piece merge (`long.rs`), so adversarial
//!    input (thousands of letters without a break) stays linear.
//!
//! Ranks are token ids: `bpe` keeps tiktoken's rank order (`token_table`).

use bpe_openai::byte_pair_encoding::BytePairEncoding;

use super::long::Long;

/// Longest piece counted with the quadratic merge loop; longer pieces use the
/// linear long-piece merge. The merge loop does at most `MERGE_MAX²`
/// steps per piece, so the work stays O(`MERGE_MAX` × text length).
pub(super) const MERGE_MAX: usize = 64;

/// Most entries of a [`Memo`] (direct-mapped: a new piece replaces the one in its slot).
const MEMO_MAX_SLOTS: usize = 16384;

/// Piece → token count for the pieces of one text (worth it above a few KB of text).
pub(super) struct Memo<'a> {
    /// An empty piece marks an empty slot (empty pieces are never stored).
    slots: Vec<(&'a [u8], u32)>,
}

impl Memo<'_> {
    /// A memo sized for a text of `len` bytes: one slot per 8 bytes, a power of two
    /// from 512 to [`MEMO_MAX_SLOTS`] (384 KB).
    pub(super) fn new(len: usize) -> Self {
        let size = (len / 8).next_power_of_two().clamp(512, MEMO_MAX_SLOTS);
        Memo {
            slots: vec![(&[][..], 0); size],
        }
    }
}

/// The filter takes its bit index from the hash bits above this shift (the slot
/// index comes from the low bits).
const FILTER_SHIFT: u32 = 40;

/// No rank (the byte string is not a token).
const NONE: u32 = u32::MAX;

/// One entry of the vocabulary table: the token's first (up to) 8 bytes packed into
/// `key`, its length and its rank. Tokens of at most 8 bytes are matched on `key` and
/// `len` alone (exact, no second memory access); longer ones are checked byte for byte.
#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    /// 0 marks an empty slot (no token is empty).
    len: u32,
    rank: u32,
}

/// The first (up to) 8 bytes of `bytes`, little-endian, zero-padded.
#[inline]
fn head(bytes: &[u8]) -> u64 {
    match bytes.first_chunk::<8>() {
        Some(first) => u64::from_le_bytes(*first),
        None => {
            // Shorter than 8 bytes: assemble by hand (a `copy_from_slice` of a
            // variable length is a `memmove` call).
            let mut key = 0u64;
            for (i, &b) in bytes.iter().enumerate() {
                key |= u64::from(b) << (8 * i);
            }
            key
        }
    }
}

/// Where `bytes` (with `key = head(bytes)`) starts probing; any mixing of the bytes works,
/// collisions only cost probes.
#[inline]
fn hash(bytes: &[u8], key: u64) -> u64 {
    let mut h = key ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if let Some(last) = bytes.last_chunk::<8>() {
        if bytes.len() > 8 {
            h = h.rotate_left(29) ^ u64::from_le_bytes(*last).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        }
    }
    h = (h ^ (h >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

/// The lowest of `ranks` and its index, the leftmost on ties: tiktoken's next merge
/// (`NONE` when there is none).
#[inline]
pub(super) fn leftmost_lowest(ranks: &[u32]) -> (u32, usize) {
    let (mut best, mut at) = (NONE, 0);
    for (i, &r) in ranks.iter().enumerate() {
        if r < best {
            (best, at) = (r, i);
        }
    }
    (best, at)
}

/// The vocabulary of one encoding as a byte string → rank table.
pub(super) struct Ranks {
    bpe: &'static BytePairEncoding,
    /// Open addressing with linear probing, at most ~77% full (2 MB for cl100k, 4 MB
    /// for o200k; a bigger, emptier table measured slower: fewer of its lines stay cached).
    slots: Vec<Slot>,
    mask: usize,
    /// One bit per hash value (high bits of [`hash`]), set for every token: most
    /// strings that are not tokens are turned away here, in a table small enough to
    /// stay in cache, instead of in `slots`.
    filter: Vec<u64>,
    filter_mask: u64,
    /// The long-piece merge's tables (built with these at load); its rank of every
    /// two-byte string (`long.two`, `NONE` when it is not a token) also starts this
    /// merge loop: one lookup per byte, no hashing.
    pub(super) long: Long,
}

impl Ranks {
    /// Builds the tables for `bpe` (once per process, at `preload` or first use).
    pub(super) fn new(bpe: &'static BytePairEncoding) -> Self {
        let n = bpe.num_tokens();
        let size = n.next_power_of_two().max(16);
        let mask = size - 1;
        let mut slots = vec![Slot::default(); size];
        // About 10% of the bits set: 8 bits per token, rounded up to a power of two.
        let filter_bits = (8 * n).next_power_of_two().max(64);
        let filter_mask = (filter_bits - 1) as u64;
        let mut filter = vec![0u64; filter_bits / 64];
        for rank in 0..n {
            let id = rank as u32;
            let bytes = bpe.token_bytes(id);
            let key = head(bytes);
            let h = hash(bytes, key);
            let bit = (h >> FILTER_SHIFT) & filter_mask;
            filter[(bit >> 6) as usize] |= 1 << (bit & 63);
            let mut i = (h as usize) & mask;
            while slots[i].len != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                key,
                len: bytes.len() as u32,
                rank: id,
            };
        }
        Ranks {
            bpe,
            slots,
            mask,
            long: Long::new(bpe),
            filter,
            filter_mask,
        }
    }

    /// The rank of `bytes` (not empty) if it is a token, else `NONE`.
    #[inline]
    fn rank(&self, bytes: &[u8]) -> u32 {
        if let [a, b] = bytes {
            return self.long.two[(usize::from(*a) << 8) | usize::from(*b)];
        }
        let key = head(bytes);
        let len = bytes.len() as u32;
        let h = hash(bytes, key);
        let bit = (h >> FILTER_SHIFT) & self.filter_mask;
        if self.filter[(bit >> 6) as usize] & (1 << (bit & 63)) == 0 {
            return NONE;
        }
        let mut i = (h as usize) & self.mask;
        loop {
            let slot = self.slots[i];
            if slot.len == 0 {
                return NONE;
            }
            if slot.len == len
                && slot.key == key
                && (len <= 8 || self.bpe.token_bytes(slot.rank) == bytes)
            {
                return slot.rank;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The number of tokens tiktoken encodes `piece` into.
    #[inline]
    pub(super) fn count(&self, piece: &[u8]) -> usize {
        match piece.len() {
            0 => 0,
            1 => 1,
            n if n <= MERGE_MAX => self.short_count(piece),
            _ => self.long.count(piece),
        }
    }

    /// [`Ranks::count`] of a piece of 2..=`MERGE_MAX` bytes.
    #[inline]
    fn short_count(&self, piece: &[u8]) -> usize {
        if self.rank(piece) != NONE {
            1
        } else {
            self.merge_count(piece)
        }
    }

    /// [`Ranks::count`], remembering the counts of short pieces in `memo`: ordinary text
    /// repeats most of its words, and a hit costs one probe of a small table.
    #[inline]
    pub(super) fn count_memo<'a>(&self, piece: &'a [u8], memo: &mut Memo<'a>) -> usize {
        match piece.len() {
            0 => 0,
            1 => 1,
            n if n <= MERGE_MAX => {
                let i = (hash(piece, head(piece)) as usize) & (memo.slots.len() - 1);
                let (seen, count) = memo.slots[i];
                if seen == piece {
                    return count as usize;
                }
                let count = self.short_count(piece);
                memo.slots[i] = (piece, count as u32);
                count
            }
            _ => self.long.count(piece),
        }
    }

    /// tiktoken's `byte_pair_merge`, counting the parts left at the end.
    /// `piece` has 2..=`MERGE_MAX` bytes.
    ///
    /// A part is named by the index of its first byte. `rank[i]` is the rank of the
    /// merge of part `i` with the part after it (`NONE` if that is not a token, or `i`
    /// is not a part any more); `next[i]` is where the part after `i` starts (`n` for
    /// the last), `prev[i]` where the part before starts. tiktoken keeps the same
    /// ranks in a vector and removes merged entries; the lowest rank, leftmost on ties,
    /// is merged first in both.
    fn merge_count(&self, piece: &[u8]) -> usize {
        let n = piece.len();
        let mut rank = [NONE; MERGE_MAX];
        let mut next = [0u8; MERGE_MAX];
        let mut prev = [0u8; MERGE_MAX];
        for i in 0..n - 1 {
            rank[i] = self.rank(&piece[i..i + 2]);
            next[i] = (i + 1) as u8;
            prev[i + 1] = i as u8;
        }
        next[n - 1] = n as u8;
        let mut parts = n;
        loop {
            let (best, i) = leftmost_lowest(&rank[..n - 1]);
            if best == NONE {
                return parts;
            }
            // Merge part i with the part j after it.
            let j = usize::from(next[i]);
            let after = usize::from(next[j]); // start of the part after the merged one, or n
            rank[i] = if after < n {
                self.rank(&piece[i..usize::from(next[after])])
            } else {
                NONE
            };
            if i > 0 {
                let p = usize::from(prev[i]);
                rank[p] = self.rank(&piece[p..after]);
            }
            rank[j] = NONE;
            next[i] = after as u8;
            if after < n {
                prev[after] = i as u8;
            }
            parts -= 1;
        }
    }
}
