//! Compile-time indexes over the rule tables, so that classifying a failure never walks a
//! whole table.
//!
//! Every evaluation runs in a fresh wasm instance, so nothing may be built at run time: both
//! indexes are computed by the compiler (`const fn`) and land in the module's data segment.
//!
//! - [`TYPE_INDEX`]: a hash table from an exception type name to its row of
//!   [`INTERRUPTED_TYPES`] or [`TYPE_RULES`]: one probe or two instead of ~150 comparisons.
//! - [`PHRASE_INDEX`]: the phrases of [`MESSAGE_RULES`] and [`HTTP_CONTEXT_PHRASES`] bucketed by
//!   a hash of their first four bytes, so a word of a message is compared only with the few
//!   phrases that share its bucket (most words with none), by 8-byte integer comparisons.
//! - [`status_rule`]: the rule of a three-digit HTTP status code.
//!
//! Both compare text eight bytes at a time: [`word_at`] reads eight bytes as one `u64`,
//! lower-cased in one go by [`lower8`]. The message scan also finds word starts eight bytes
//! at a time ([`word_bytes8`]).

use crate::rules::{
    HTTP_CONTEXT_PHRASE_TABLE, HTTP_STATUS_RULE_TABLE, INTERRUPTED_TYPE_TABLE, MESSAGE_RULE_TABLE,
    StatusRule, TYPE_RULE_TABLE,
};
#[cfg(doc)]
use crate::rules::{
    HTTP_CONTEXT_PHRASES, HTTP_STATUS_RULES, INTERRUPTED_TYPES, MESSAGE_RULES, TYPE_RULES,
};

// --- eight bytes at a time -----------------------------------------------------------------

/// `0x01` in every byte of a `u64`.
const ONES: u64 = 0x0101_0101_0101_0101;
/// `0x80` (the top bit) in every byte of a `u64`.
const TOP_BITS: u64 = ONES * 0x80;

/// ASCII-lower-cases the eight bytes packed in `word`, all at once (SWAR: "SIMD within a
/// register"); other bytes, including non-ASCII ones, are left alone.
///
/// `is_upper` gets the top bit of every ASCII byte in `'A'..='Z'` (see [`at_least`]); shifted
/// right by two that bit is `0x20`, the upper-to-lower case difference.
pub const fn lower8(word: u64) -> u64 {
    let low7 = word & !TOP_BITS;
    let is_upper = at_least(low7, b'A') & !at_least(low7, b'Z' + 1) & !word & TOP_BITS;
    word | (is_upper >> 2)
}

/// Marks the ASCII letters and digits among the eight bytes packed in `word` (any case): the
/// top bit of each such byte is set in the result, every other bit is clear. OR-ing `0x20`
/// into every byte folds `'A'..='Z'` onto `'a'..='z'` (and no other byte onto them), then the
/// same range test as in [`lower8`] picks `'0'..='9'` and `'a'..='z'`.
pub const fn word_bytes8(word: u64) -> u64 {
    let low7 = word & !TOP_BITS;
    let folded = low7 | (ONES * 0x20);
    let digit = at_least(low7, b'0') & !at_least(low7, b'9' + 1);
    let letter = at_least(folded, b'a') & !at_least(folded, b'z' + 1);
    (digit | letter) & !word & TOP_BITS
}

/// Per byte of `low7` (each below `0x80`): the top bit is set exactly when the byte is at least
/// `c`. `b + (0x80 - c)` stays below `0x100`, so no byte carries into the next.
const fn at_least(low7: u64, c: u8) -> u64 {
    low7 + ONES * (0x80 - c as u64)
}

/// The eight bytes of `bytes` from `at` as a little-endian `u64` (byte `at` lowest); bytes
/// past the end read as 0, so they never equal a byte of a phrase or a name.
#[inline]
pub const fn raw_at(bytes: &[u8], at: usize) -> u64 {
    let Some((_, rest)) = bytes.split_at_checked(at) else {
        return 0;
    };
    match rest.first_chunk::<8>() {
        Some(chunk) => u64::from_le_bytes(*chunk),
        None => short_word(rest),
    }
}

/// [`raw_at`], ASCII lower-cased.
#[inline]
pub const fn word_at(bytes: &[u8], at: usize) -> u64 {
    lower8(raw_at(bytes, at))
}

/// The fewer than eight bytes of `rest` as a little-endian `u64`, zero-filled.
#[cold]
const fn short_word(rest: &[u8]) -> u64 {
    let mut word = 0;
    let mut i = 0;
    while i < rest.len() {
        word |= (rest[i] as u64) << (8 * i);
        i += 1;
    }
    word
}

/// A mask of the low `n` bytes of a `u64` (all of it from 8 on).
pub const fn low_bytes(n: usize) -> u64 {
    if n >= 8 { u64::MAX } else { (1 << (8 * n)) - 1 }
}

/// `a.eq_ignore_ascii_case(b)`, eight bytes at a time.
fn eq_ignore_ascii_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut offset = 0;
    while offset < a.len() {
        let differ = word_at(a, offset) ^ word_at(b, offset);
        if differ & low_bytes(a.len() - offset) != 0 {
            return false;
        }
        offset += 8;
    }
    true
}

/// A multiplicative hash of `key` down to `bits` bits (Fibonacci hashing: the golden ratio's
/// multiplier spreads every input bit into the top bits, which are kept).
const fn hash(key: u64, bits: u32) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

// --- exception type names ------------------------------------------------------------------

/// What a type name is, according to the rule tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeEntry {
    /// In [`INTERRUPTED_TYPES`]: the job was interrupted while it ran.
    Interrupted,
    /// Row `.0` of [`TYPE_RULES`].
    Rule(usize),
}

/// How many type names the index holds.
const TYPE_NAME_COUNT: usize = INTERRUPTED_TYPE_TABLE.len() + TYPE_RULE_TABLE.len();
/// log2 of the number of slots of [`TypeIndex`]: 512 slots for ~160 names keeps probe runs
/// short.
const TYPE_SLOT_BITS: u32 = 9;

/// The name of type entry `n`: [`INTERRUPTED_TYPES`] first, then [`TYPE_RULES`].
const fn type_name(n: usize) -> &'static str {
    if n < INTERRUPTED_TYPE_TABLE.len() {
        INTERRUPTED_TYPE_TABLE[n]
    } else {
        TYPE_RULE_TABLE[n - INTERRUPTED_TYPE_TABLE.len()].name
    }
}

/// The hash key of a type name, ASCII case ignored: its length, first eight and last eight
/// bytes. Constant time whatever the name's length; names that share a key are told apart
/// by comparing them.
const fn type_key(name: &[u8]) -> u64 {
    let head = word_at(name, 0);
    let tail = word_at(name, name.len().saturating_sub(8));
    head ^ tail.rotate_left(29) ^ name.len() as u64
}

/// A hash table of every name in [`INTERRUPTED_TYPES`] and [`TYPE_RULES`], open addressing
/// with linear probing, built by the compiler.
#[derive(Debug)]
pub struct TypeIndex {
    /// Per slot, 1 + the type entry stored there (see [`type_name`]), or 0 when empty.
    slots: [u8; 1 << TYPE_SLOT_BITS],
    /// Whether any name has a dot (then it is matched against the whole printed type).
    has_dotted_names: bool,
}

/// The type-name index.
pub static TYPE_INDEX: TypeIndex = TypeIndex::build();

impl TypeIndex {
    const fn build() -> Self {
        const { assert!(TYPE_NAME_COUNT < 255 && 2 * TYPE_NAME_COUNT < 1 << TYPE_SLOT_BITS) };
        let mut slots = [0u8; 1 << TYPE_SLOT_BITS];
        let mut has_dotted_names = false;
        let mut n = 0;
        while n < TYPE_NAME_COUNT {
            let name = type_name(n).as_bytes();
            let mut slot = hash(type_key(name), TYPE_SLOT_BITS);
            while slots[slot] != 0 {
                slot = (slot + 1) % slots.len();
            }
            slots[slot] = n as u8 + 1;
            let mut i = 0;
            while i < name.len() {
                has_dotted_names |= name[i] == b'.';
                i += 1;
            }
            n += 1;
        }
        Self {
            slots,
            has_dotted_names,
        }
    }

    /// The entry whose name equals `name`, ASCII case ignored.
    pub fn get(&self, name: &str) -> Option<TypeEntry> {
        let mut slot = hash(type_key(name.as_bytes()), TYPE_SLOT_BITS);
        loop {
            let n = usize::from(*self.slots.get(slot)?).checked_sub(1)?;
            if eq_ignore_ascii_case(type_name(n).as_bytes(), name.as_bytes()) {
                return Some(match n.checked_sub(INTERRUPTED_TYPE_TABLE.len()) {
                    None => TypeEntry::Interrupted,
                    Some(row) => TypeEntry::Rule(row),
                });
            }
            slot = (slot + 1) % self.slots.len();
        }
    }

    /// The entries the printed type `exc_type` matches (see [`crate::rules`]): a name without
    /// a dot is matched against its last component, a dotted name against the whole of it;
    /// ASCII case ignored.
    ///
    /// The rule tables name each type once, so at most two entries match: a plain name
    /// (through the last component, which has no dot) and a dotted one (through the whole
    /// type, looked up only if the tables have dotted names at all).
    pub fn lookup(&self, exc_type: &str) -> [Option<TypeEntry>; 2] {
        let last = last_component(exc_type);
        let dotted = if self.has_dotted_names && last.len() < exc_type.len() {
            self.get(exc_type)
        } else {
            None
        };
        [self.get(last), dotted]
    }
}

/// `DoesNotExist` of `app.models.Order.DoesNotExist`: after the last dot.
pub fn last_component(exc_type: &str) -> &str {
    let bytes = exc_type.as_bytes();
    match bytes.iter().rposition(|&b| b == b'.') {
        Some(dot) => exc_type.get(dot + 1..).unwrap_or_default(),
        None => exc_type,
    }
}

// --- message phrases -----------------------------------------------------------------------

/// What a phrase of [`PHRASE_INDEX`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhraseEntry {
    /// Row `.0` of [`MESSAGE_RULES`].
    Rule(usize),
    /// One of [`HTTP_CONTEXT_PHRASES`].
    HttpContext,
}

/// Which phrases a scan looks for. The phrases of [`HTTP_CONTEXT_PHRASES`] are always looked
/// for; those of [`MESSAGE_RULES`] by the retryability of their failure type, so that a scan
/// can skip the side a type match has already decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Rules whose failure type is retryable.
    pub retryable: bool,
    /// Rules whose failure type is not retryable.
    pub non_retryable: bool,
}

impl Wanted {
    /// Every phrase.
    #[cfg(test)]
    pub const ALL: Self = Self {
        retryable: true,
        non_retryable: true,
    };

    /// As a mask of [`Phrase::kind`] bits.
    const fn mask(self) -> u8 {
        HTTP_CONTEXT_KIND
            | if self.retryable { RETRYABLE_KIND } else { 0 }
            | if self.non_retryable {
                NON_RETRYABLE_KIND
            } else {
                0
            }
    }
}

/// [`Phrase::kind`]: a rule whose failure type is retryable.
const RETRYABLE_KIND: u8 = 1;
/// [`Phrase::kind`]: a rule whose failure type is not retryable.
const NON_RETRYABLE_KIND: u8 = 2;
/// [`Phrase::kind`]: an HTTP-context phrase.
const HTTP_CONTEXT_KIND: u8 = 4;

/// How many phrases the index holds: [`MESSAGE_RULES`], then [`HTTP_CONTEXT_PHRASES`].
const PHRASE_COUNT: usize = MESSAGE_RULE_TABLE.len() + HTTP_CONTEXT_PHRASE_TABLE.len();
/// log2 of the number of buckets of [`PhraseIndex`]: 512 buckets for ~120 phrases leave most
/// words of a message in an empty bucket.
const PHRASE_BUCKET_BITS: u32 = 9;
/// Every phrase is at least this long: the bucket is chosen by this many first bytes.
const PHRASE_KEY_BYTES: usize = 4;

/// Phrase `n`'s text: [`MESSAGE_RULES`] first, then [`HTTP_CONTEXT_PHRASES`].
const fn phrase_text(n: usize) -> &'static str {
    if n < MESSAGE_RULE_TABLE.len() {
        MESSAGE_RULE_TABLE[n].phrase
    } else {
        HTTP_CONTEXT_PHRASE_TABLE[n - MESSAGE_RULE_TABLE.len()]
    }
}

/// The bucket of a word whose first eight bytes are `raw` (as read, any case): a hash of its
/// first four bytes with `0x20` OR-ed into each. That folds upper-case ASCII letters onto
/// lower-case ones in one operation; it also folds a few other bytes together (`_` and DEL,
/// `@` and `` ` ``…), which only puts a phrase in a word's bucket that the comparison then
/// rejects.
const fn phrase_bucket(raw: u64) -> usize {
    hash(
        (raw | (ONES * 0x20)) & low_bytes(PHRASE_KEY_BYTES),
        PHRASE_BUCKET_BITS,
    )
}

/// One phrase, as the scan compares it.
#[derive(Debug, Clone, Copy)]
struct Phrase {
    /// Its first eight bytes as [`word_at`] reads them, zero past its end.
    head: u64,
    /// Its last eight bytes (when it is longer than eight).
    tail: u64,
    /// Its length.
    len: u8,
    /// Its number (see [`phrase_text`]).
    number: u8,
    /// What it is: one of the `*_KIND` bits.
    kind: u8,
}

impl Phrase {
    const EMPTY: Self = Self {
        head: 0,
        tail: 0,
        len: 0,
        number: 0,
        kind: 0,
    };

    const fn new(number: usize) -> Self {
        let text = phrase_text(number).as_bytes();
        assert!(text.len() >= PHRASE_KEY_BYTES && text.len() < 256);
        assert!(text[0].is_ascii_alphanumeric());
        let kind = if number >= MESSAGE_RULE_TABLE.len() {
            HTTP_CONTEXT_KIND
        } else if MESSAGE_RULE_TABLE[number].failure_type.is_retryable() {
            RETRYABLE_KIND
        } else {
            NON_RETRYABLE_KIND
        };
        Self {
            head: word_at(text, 0),
            tail: word_at(text, text.len().saturating_sub(8)),
            len: text.len() as u8,
            number: number as u8,
            kind,
        }
    }

    /// Whether it occurs in `text` at `at`, where the (lower-cased) eight bytes are `word`: its
    /// first eight bytes, then its last eight, then (over 16 bytes long) the rest.
    #[inline]
    fn occurs_at(&self, text: &[u8], at: usize, word: u64) -> bool {
        let len = usize::from(self.len);
        word & low_bytes(len) == self.head
            && (len <= 8 || word_at(text, at + len - 8) == self.tail)
            && (len <= 16 || middle_matches(text, at, phrase_text(self.number.into()).as_bytes()))
    }

    /// What the phrase is, for the scan.
    fn entry(&self) -> PhraseEntry {
        let n = usize::from(self.number);
        match n.checked_sub(MESSAGE_RULE_TABLE.len()) {
            None => PhraseEntry::Rule(n),
            Some(_) => PhraseEntry::HttpContext,
        }
    }
}

/// The phrases grouped by bucket (a hash of their first four bytes), each with its first and
/// last eight bytes as integers: a word of a message is compared only with its bucket's
/// phrases (most words have none), and a phrase of up to 16 bytes is compared in two integer
/// comparisons.
#[derive(Debug)]
pub struct PhraseIndex {
    /// Bucket `b`'s phrases are `phrases[starts[b]..starts[b + 1]]`.
    starts: [u8; (1 << PHRASE_BUCKET_BITS) + 1],
    /// The phrases, ordered by bucket, then by number.
    phrases: [Phrase; PHRASE_COUNT],
}

/// The phrase index.
pub static PHRASE_INDEX: PhraseIndex = PhraseIndex::build();

impl PhraseIndex {
    const fn build() -> Self {
        const { assert!(PHRASE_COUNT < 256) };
        // Counting sort by bucket; within a bucket, phrase numbers stay in order.
        let mut counts = [0usize; 1 << PHRASE_BUCKET_BITS];
        let mut n = 0;
        while n < PHRASE_COUNT {
            counts[phrase_bucket(raw_at(phrase_text(n).as_bytes(), 0))] += 1;
            n += 1;
        }
        let mut starts = [0u8; (1 << PHRASE_BUCKET_BITS) + 1];
        let mut bucket = 0;
        while bucket < counts.len() {
            starts[bucket + 1] = starts[bucket] + counts[bucket] as u8;
            bucket += 1;
        }
        let mut filled = [0usize; 1 << PHRASE_BUCKET_BITS];
        let mut phrases = [Phrase::EMPTY; PHRASE_COUNT];
        let mut n = 0;
        while n < PHRASE_COUNT {
            let bucket = phrase_bucket(raw_at(phrase_text(n).as_bytes(), 0));
            phrases[starts[bucket] as usize + filled[bucket]] = Phrase::new(n);
            filled[bucket] += 1;
            n += 1;
        }
        Self { starts, phrases }
    }

    /// Calls `found` with every `wanted` phrase that occurs in `text` at `at`, ASCII case
    /// ignored, given `raw`, the eight bytes of `text` there ([`raw_at`]).
    #[inline]
    pub fn for_each_match_at(
        &self,
        text: &[u8],
        at: usize,
        raw: u64,
        wanted: Wanted,
        mut found: impl FnMut(PhraseEntry),
    ) {
        let bucket = phrase_bucket(raw);
        let (Some(&start), Some(&end)) = (self.starts.get(bucket), self.starts.get(bucket + 1))
        else {
            return;
        };
        if start == end {
            return; // most words
        }
        let word = lower8(raw);
        let mask = wanted.mask();
        for phrase in self
            .phrases
            .get(usize::from(start)..usize::from(end))
            .unwrap_or_default()
        {
            if phrase.kind & mask != 0 && phrase.occurs_at(text, at, word) {
                found(phrase.entry());
            }
        }
    }
}

/// Whether the bytes of `text` from `at` equal those of `phrase` (lower case) between its
/// first eight and its last eight, ASCII case ignored in `text`.
fn middle_matches(text: &[u8], at: usize, phrase: &[u8]) -> bool {
    let mut offset = 8;
    while offset + 8 < phrase.len() {
        if word_at(text, at + offset) != raw_at(phrase, offset) {
            return false;
        }
        offset += 8;
    }
    true
}

// --- HTTP status codes ---------------------------------------------------------------------

/// [`HTTP_STATUS_RULES`]' codes as integers (three ASCII digits, little-endian), so a token is
/// looked up with integer comparisons.
static STATUS_CODES: [u32; HTTP_STATUS_RULE_TABLE.len()] = status_codes();

const fn status_codes() -> [u32; HTTP_STATUS_RULE_TABLE.len()] {
    let mut codes = [0; HTTP_STATUS_RULE_TABLE.len()];
    let mut row = 0;
    while row < codes.len() {
        let code = HTTP_STATUS_RULE_TABLE[row].code.as_bytes();
        assert!(code.len() == 3);
        codes[row] = status_key(&[code[0], code[1], code[2]]);
        row += 1;
    }
    codes
}

/// Three bytes as a little-endian integer.
const fn status_key(token: &[u8; 3]) -> u32 {
    u32::from_le_bytes([token[0], token[1], token[2], 0])
}

/// The rule of [`HTTP_STATUS_RULES`] for the three-digit `token`, if any.
pub fn status_rule(token: &[u8; 3]) -> Option<&'static StatusRule> {
    let key = status_key(token);
    let row = STATUS_CODES.iter().position(|&code| code == key)?;
    HTTP_STATUS_RULE_TABLE.get(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{HTTP_STATUS_RULES, INTERRUPTED_TYPES, TYPE_RULES};

    /// Whether every name is found, as itself.
    fn type_index_is_complete() -> bool {
        INTERRUPTED_TYPES
            .iter()
            .all(|name| TYPE_INDEX.get(name) == Some(TypeEntry::Interrupted))
            && TYPE_RULES
                .iter()
                .enumerate()
                .all(|(row, rule)| TYPE_INDEX.get(rule.name) == Some(TypeEntry::Rule(row)))
    }

    /// The phrases found in `text` at `at`.
    fn phrase_index_finds(text: &str, at: usize) -> Vec<PhraseEntry> {
        let mut entries = Vec::new();
        let raw = raw_at(text.as_bytes(), at);
        PHRASE_INDEX.for_each_match_at(text.as_bytes(), at, raw, Wanted::ALL, |entry| {
            entries.push(entry)
        });
        entries
    }

    #[test]
    fn lower8_lowercases_ascii_letters_only() {
        for b in 0..=255u8 {
            let word = u64::from_le_bytes([b, b'A', b'z', b, 0x80 | b, b'@', b'[', b]);
            let expected = u64::from_le_bytes(
                [b, b'A', b'z', b, 0x80 | b, b'@', b'[', b].map(|x| x.to_ascii_lowercase()),
            );
            assert_eq!(lower8(word), expected, "{b:#x}");
        }
    }

    #[test]
    fn word_bytes8_marks_ascii_letters_and_digits() {
        for b in 0..=255u8 {
            let bytes =
                [b, b'a', b'/', b'0', b'9', b'z', b'{', b'`'].map(|x| x.to_ascii_lowercase());
            let marks = word_bytes8(u64::from_le_bytes(bytes)).to_le_bytes();
            for (mark, byte) in marks.iter().zip(bytes) {
                let expected = if byte.is_ascii_alphanumeric() {
                    0x80
                } else {
                    0
                };
                assert_eq!(*mark, expected, "{byte:#x}");
            }
        }
    }

    #[test]
    fn eq_ignore_ascii_case_agrees_with_core() {
        let words = [
            "",
            "a",
            "A",
            "ConnectionError",
            "connectionerror",
            "CONNECTIONERROR",
            "ConnectionErrors",
            "ConnectionErrpr",
            "é",
            "É",
            "Connection\0rror",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    eq_ignore_ascii_case(a.as_bytes(), b.as_bytes()),
                    a.eq_ignore_ascii_case(b),
                    "{a} {b}"
                );
            }
        }
    }

    #[test]
    fn word_at_reads_eight_bytes_zero_filled() {
        let text = b"Hello, World";
        assert_eq!(word_at(text, 0), u64::from_le_bytes(*b"hello, w"));
        assert_eq!(word_at(text, 7), u64::from_le_bytes(*b"world\0\0\0"));
        assert_eq!(word_at(text, 12), 0);
        assert_eq!(word_at(text, 100), 0);
        assert_eq!(word_at(b"", 0), 0);
    }

    #[test]
    fn every_type_name_is_found_as_itself() {
        assert!(type_index_is_complete());
        assert_eq!(TYPE_INDEX.get("valueerror"), TYPE_INDEX.get("ValueError"));
        assert_eq!(TYPE_INDEX.get("ValueErro"), None);
        assert_eq!(TYPE_INDEX.get(""), None);
        assert_eq!(TYPE_INDEX.get(&"x".repeat(10_000)), None);
    }

    #[test]
    fn status_codes_are_found() {
        for rule in HTTP_STATUS_RULES {
            let token = rule
                .code
                .as_bytes()
                .first_chunk::<3>()
                .copied()
                .unwrap_or_default();
            assert_eq!(status_rule(&token), Some(rule));
        }
        assert_eq!(status_rule(b"500"), None);
        assert_eq!(status_rule(b"429"), HTTP_STATUS_RULES.first());
    }

    #[test]
    fn lookup_uses_the_last_component() {
        let row = |name: &str| TYPE_RULES.iter().position(|r| r.name == name);
        let [first, second] = TYPE_INDEX.lookup("requests.exceptions.ConnectionError");
        assert_eq!(first, row("ConnectionError").map(TypeEntry::Rule));
        assert_eq!(second, None);
        assert_eq!(
            TYPE_INDEX.lookup("rq.exceptions.AbandonedJobError")[0],
            Some(TypeEntry::Interrupted)
        );
        assert_eq!(TYPE_INDEX.lookup("ConnectionError.x"), [None, None]);
        assert_eq!(last_component("a.b.C"), "C");
        assert_eq!(last_component("x."), "");
        assert_eq!(last_component("C"), "C");
    }

    #[test]
    fn every_phrase_is_found_where_it_starts() {
        for n in 0..PHRASE_COUNT {
            let text = phrase_text(n);
            let expected = match n.checked_sub(MESSAGE_RULE_TABLE.len()) {
                None => PhraseEntry::Rule(n),
                Some(_) => PhraseEntry::HttpContext,
            };
            let upper = format!("x {} y", text.to_ascii_uppercase());
            assert!(phrase_index_finds(text, 0).contains(&expected), "{text}");
            assert!(phrase_index_finds(&upper, 2).contains(&expected), "{text}");
            // Cut short by one byte, it is not found; nor with any one byte changed.
            let short = &text[..text.len() - 1];
            assert!(!phrase_index_finds(short, 0).contains(&expected), "{text}");
            for i in 0..text.len() {
                let mut changed = text.as_bytes().to_vec();
                changed[i] = if changed[i] == b'x' { b'y' } else { b'x' };
                let changed = String::from_utf8_lossy(&changed).into_owned();
                assert!(
                    !phrase_index_finds(&changed, 0).contains(&expected),
                    "{changed}"
                );
            }
        }
    }
}
