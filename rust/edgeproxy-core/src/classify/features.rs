//! Hashed n-gram features of a text (the "hashing trick": no vocabulary to store or look up).
//!
//! The text is normalised first: lowercase, every digit becomes `0` (numbers differ, their
//! shape does not), every run of whitespace or control characters becomes one space, and a
//! space pads each end (so n-grams see where words start and end). Then:
//!
//! - character n-grams of `char_min..=char_max` characters (Unicode scalar values), and
//! - word n-grams of `1..=word_max` words, a word being a run of alphanumeric characters,
//!
//! are each hashed (character n-grams: a cyclic polynomial hash of the characters' SplitMix64
//! hashes; words: FNV-1a over their characters), then a Fibonacci multiply whose top `bits`
//! bits are the bucket. A text longer than `max_bytes` is cut to its first and last `max_bytes / 2`
//! bytes (at character boundaries), featurised as two pieces: the cost of a request is bounded,
//! and the start (instructions) and the end (the question) both count.

use std::ops::Range;

/// How a text becomes features. Stored in the model file: training and scoring agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureConfig {
    /// Buckets are `2^bits` (8..=24).
    pub bits: u8,
    /// The shortest character n-gram (1..=8; 0 with `char_max` 0: no character n-grams).
    pub char_min: u8,
    /// The longest character n-gram (`char_min..=8`).
    pub char_max: u8,
    /// The longest word n-gram in words (0..=3; 0: no word features).
    pub word_max: u8,
    /// Texts longer than this are cut to their first and last halves (64 B..=1 MiB).
    pub max_bytes: u32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            bits: 18,
            char_min: 3,
            char_max: 5,
            word_max: 2,
            max_bytes: 8192,
        }
    }
}

/// The most buckets a model may have: `2^MAX_BITS`.
pub const MAX_BITS: u8 = 24;
const MIN_BITS: u8 = 8;
const MAX_CHAR_GRAM: u8 = 8;
const MAX_WORD_GRAM: u8 = 3;
const MIN_MAX_BYTES: u32 = 64;
const MAX_MAX_BYTES: u32 = 1 << 20;

impl FeatureConfig {
    /// Why this configuration cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !(MIN_BITS..=MAX_BITS).contains(&self.bits) {
            return Some(format!(
                "bits must be {MIN_BITS}..={MAX_BITS}, got {}",
                self.bits
            ));
        }
        let no_chars = self.char_min == 0 && self.char_max == 0;
        let char_range_ok =
            1 <= self.char_min && self.char_min <= self.char_max && self.char_max <= MAX_CHAR_GRAM;
        if !(no_chars || char_range_ok) {
            return Some(format!(
                "character n-grams must be 1 <= min <= max <= {MAX_CHAR_GRAM} (or both 0), got {}..={}",
                self.char_min, self.char_max
            ));
        }
        if self.word_max > MAX_WORD_GRAM {
            return Some(format!(
                "word n-grams must be at most {MAX_WORD_GRAM}, got {}",
                self.word_max
            ));
        }
        if no_chars && self.word_max == 0 {
            return Some("no features: set character or word n-grams".to_owned());
        }
        if !(MIN_MAX_BYTES..=MAX_MAX_BYTES).contains(&self.max_bytes) {
            return Some(format!(
                "max_bytes must be {MIN_MAX_BYTES}..={MAX_MAX_BYTES}, got {}",
                self.max_bytes
            ));
        }
        None
    }

    /// The number of buckets, `2^bits`.
    pub fn buckets(&self) -> usize {
        1usize << self.bits
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const WORD_SEED: u64 = FNV_OFFSET;
const ROTATE: u32 = 13;
// One salt per n-gram length (and per word n-gram length), so that n-grams of different
// lengths, and words, fall into independent buckets.
const LENGTH_SALT: [u64; MAX_CHAR_GRAM as usize] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
    0xc0ac_29b7_c97c_50dd,
    0x3f84_d5b5_b547_0917,
];
const GRAM_SALT: [u64; 3] = [
    0x0000_0000_0000_0000,
    0x2545_f491_4f6c_dd1d,
    0x6a09_e667_f3bc_c909,
];

#[inline(always)]
fn step(h: u64, c: u32) -> u64 {
    (h ^ u64::from(c)).wrapping_mul(FNV_PRIME)
}

#[inline(always)]
fn bucket(h: u64, shift: u32) -> usize {
    // A Fibonacci multiply spreads FNV's low-bit differences into the top bits kept.
    (h.wrapping_mul(GOLDEN) >> shift) as usize
}

/// The normalised character of `ch` (see the module docs); `b' '` for spacing.
#[inline(always)]
fn normalise(ch: char) -> u32 {
    if ch.is_ascii() {
        let b = ch as u8;
        return u32::from(match b {
            b'A'..=b'Z' => b | 0x20,
            b'0'..=b'9' => b'0',
            0..=0x20 | 0x7f => b' ',
            _ => b,
        });
    }
    if ch.is_whitespace() || ch.is_control() {
        return u32::from(b' ');
    }
    if ch.is_numeric() {
        return u32::from(b'0');
    }
    let mut lower = ch.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(one), None) => one as u32,
        _ => ch as u32, // no single-character lowercase (e.g. 'İ'): kept as written
    }
}

#[inline(always)]
fn is_word_char(c: u32) -> bool {
    if c < 0x80 {
        (c as u8).is_ascii_alphanumeric()
    } else {
        char::from_u32(c).is_some_and(char::is_alphanumeric)
    }
}

/// The byte ranges of `text` that are featurised: all of it, or its head and tail.
fn pieces(text: &str, max_bytes: usize) -> (Range<usize>, Option<Range<usize>>) {
    if text.len() <= max_bytes {
        return (0..text.len(), None);
    }
    let half = max_bytes / 2;
    let mut head = half;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - half;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    (0..head, Some(tail..text.len()))
}

/// Calls `emit(bucket)` once per feature occurrence of `text` (buckets are `< 2^bits`) and
/// returns how many there were. `config` must be valid (`problem()` is None).
pub fn for_each_feature(text: &str, config: &FeatureConfig, mut emit: impl FnMut(usize)) -> usize {
    let (head, tail) = pieces(text, config.max_bytes as usize);
    let mut count = features_of(&text[head], config, &mut emit);
    if let Some(tail) = tail {
        count += features_of(&text[tail], config, &mut emit);
    }
    count
}

/// A character's hash: the SplitMix64 finaliser of its code point.
#[inline(always)]
fn mix(c: u32) -> u64 {
    let mut z = u64::from(c).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One pass over a piece of text: each normalised character is pushed once, and the n-grams
/// that end at it are emitted at once (no buffer of the text is kept).
struct Stream<'a, E: FnMut(usize)> {
    emit: &'a mut E,
    shift: u32,
    lo: usize,
    hi: usize,
    words: usize,
    // The hashes of the last `hi` characters, most recent first (see `push`).
    window: [u64; MAX_CHAR_GRAM as usize],
    chars_seen: usize,
    // The word being read (its FNV-1a hash so far), and the last `words` words' hashes.
    word: Option<u64>,
    recent: [u64; MAX_WORD_GRAM as usize],
    words_seen: usize,
    count: usize,
}

impl<E: FnMut(usize)> Stream<'_, E> {
    #[inline(always)]
    fn push(&mut self, c: u32) {
        if self.hi > 0 {
            // The n-gram ending here hashes to the XOR of its characters' hashes, each rotated
            // by its distance from the end (a cyclic polynomial hash, as in buzhash): each
            // character is hashed once, and each longer n-gram costs one rotate and one XOR.
            // (Unrolling this for the default 3..=5 measured no faster.)
            for i in (1..self.hi).rev() {
                self.window[i] = self.window[i - 1];
            }
            self.window[0] = mix(c);
            self.chars_seen += 1;
            let mut h = 0u64;
            let longest = self.hi.min(self.chars_seen);
            for (back, (&x, &salt)) in self.window[..longest].iter().zip(&LENGTH_SALT).enumerate() {
                h ^= x.rotate_left(ROTATE * back as u32);
                if back + 1 >= self.lo {
                    (self.emit)(bucket(h ^ salt, self.shift));
                    self.count += 1;
                }
            }
        }
        if self.words > 0 {
            if is_word_char(c) {
                self.word = Some(step(self.word.unwrap_or(WORD_SEED), c));
            } else if let Some(word) = self.word.take() {
                self.end_word(word);
            }
        }
    }

    fn end_word(&mut self, word: u64) {
        let n = self.words;
        self.recent.copy_within(0..n - 1, 1);
        self.recent[0] = word;
        self.words_seen += 1;
        let mut gram = 0u64;
        let longest = n.min(self.words_seen);
        for (&w, &salt) in self.recent[..longest].iter().zip(&GRAM_SALT) {
            gram = step(gram.rotate_left(23) ^ salt, 0) ^ w;
            (self.emit)(bucket(gram ^ salt, self.shift));
            self.count += 1;
        }
    }
}

fn features_of(text: &str, config: &FeatureConfig, emit: &mut impl FnMut(usize)) -> usize {
    let space = u32::from(b' ');
    let mut stream = Stream {
        emit,
        shift: 64 - u32::from(config.bits),
        lo: usize::from(config.char_min),
        hi: usize::from(config.char_max),
        words: usize::from(config.word_max),
        window: [0; MAX_CHAR_GRAM as usize],
        chars_seen: 0,
        word: None,
        recent: [0; MAX_WORD_GRAM as usize],
        words_seen: 0,
        count: 0,
    };
    stream.push(space);
    let mut last = space;
    for ch in text.chars() {
        let c = normalise(ch);
        if c == space && last == space {
            continue;
        }
        stream.push(c);
        last = c;
    }
    if last != space {
        stream.push(space);
    }
    stream.count
}
