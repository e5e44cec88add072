//! The phonetic field: how a chunk's words sound, so a name the speech recogniser spelt another
//! way ("Martha" for "Marta", "Diego" for "Tiago") still finds the memory.
//!
//! Which words: every content word (the BM25 analysis without stemming: split, lower-case, fold
//! accents, drop stop words), alphabetic and at least two letters long. Not only capitalised
//! words: recognisers often write everything lower-case, and a query cannot tell its names from
//! its other words. Ordinary words get codes too; their codes are common, so the field's BM25
//! weighs them little, while a rare name's code weighs much.
//!
//! Each word becomes its Double Metaphone codes (primary and, when different, alternate; four
//! characters, the algorithm's usual length), through `rphonetic`, a port of Apache Commons
//! Codec's encoder. The field is indexed as those codes separated by spaces.

use std::collections::HashSet;

use rphonetic::DoubleMetaphone;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter,
    TextAnalyzer, WhitespaceTokenizer,
};

use super::analysis::{LONGEST_TOKEN, STOP_WORDS};

/// The phonetic field's tokenizer name in the index schema. A change of the words chosen or of
/// their encoding gets a new name, so an index built the old way is recognised and rebuilt.
pub const PHONETIC_ANALYZER: &str = "voicerag_phonetic_v1";

/// The tokenizer of the indexed field: the codes are computed before indexing.
pub fn field_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WhitespaceTokenizer::default()).build()
}

/// Splits text into the words that get codes (before the alphabetic and length checks).
fn words_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(LONGEST_TOKEN))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| w.to_string()),
        ))
        .build()
}

/// Encodes text into phonetic codes; holds its analyzer so a caller encodes without rebuilding it.
#[derive(Clone)]
pub struct PhoneticEncoder {
    words: TextAnalyzer,
    metaphone: DoubleMetaphone,
}

impl Default for PhoneticEncoder {
    fn default() -> Self {
        Self {
            words: words_analyzer(),
            metaphone: DoubleMetaphone::default(),
        }
    }
}

impl PhoneticEncoder {
    /// The distinct codes of `text`'s content words, in first-seen order (what the phonetic
    /// field holds; the tests read it).
    #[cfg(test)]
    pub fn codes(&self, text: &str) -> Vec<String> {
        distinct_codes(&self.words(text))
    }

    /// `text`'s distinct content words (lower-cased, folded), each with its codes.
    pub fn words(&self, text: &str) -> Vec<(String, Vec<String>)> {
        self.content_words(text)
            .into_iter()
            .map(|w| {
                let codes = self.word_codes(&w);
                (w, codes)
            })
            .collect()
    }

    /// `text`'s distinct content words (lower-cased, folded, alphabetic, two letters or more),
    /// in first-seen order: the words that get codes.
    pub fn content_words(&self, text: &str) -> Vec<String> {
        let mut words = self.words.clone();
        let mut stream = words.token_stream(text);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        while stream.advance() {
            let word = &stream.token().text;
            if word.len() >= 2
                && word.bytes().all(|b| b.is_ascii_alphabetic())
                && seen.insert(word.clone())
            {
                out.push(word.clone());
            }
        }
        out
    }

    /// The content words `text` writes like names: capitalised, in a text that is not all one
    /// case. A text all in lower (or upper) case tells nothing: then every content word may be
    /// one (recognisers without casing). Lower-cased and folded, as [`Self::content_words`].
    pub fn name_like_words(&self, text: &str) -> Option<HashSet<String>> {
        let has_lower = text.chars().any(char::is_lowercase);
        let has_upper = text.chars().any(char::is_uppercase);
        if !(has_lower && has_upper) {
            return None;
        }
        let capitalised: String = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
            .collect::<Vec<_>>()
            .join(" ");
        Some(self.content_words(&capitalised).into_iter().collect())
    }

    /// The codes of one content word: primary, alternate and plain-T reading, distinct.
    pub fn word_codes(&self, word: &str) -> Vec<String> {
        let code = self.metaphone.double_metaphone(word);
        let mut codes: Vec<String> = Vec::with_capacity(3);
        let mut add = |c: String| {
            if !c.is_empty() && !codes.contains(&c) {
                codes.push(c);
            }
        };
        add(code.primary());
        add(code.alternate());
        if let Some(plain) = plain_initial_t(word) {
            add(self.metaphone.double_metaphone(&plain).primary());
        }
        codes
    }
}

/// The distinct codes of `words` (as [`PhoneticEncoder::words`] gives them), in first-seen order.
fn distinct_codes(words: &[(String, Vec<String>)]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for code in words.iter().flat_map(|(_, codes)| codes) {
        if seen.insert(code) {
            out.push(code.clone());
        }
    }
    out
}

/// The phonetic field's text for a chunk of these `words`: their codes separated by spaces.
pub fn field_text(words: &[(String, Vec<String>)]) -> String {
    distinct_codes(words).join(" ")
}

/// The sound-alike field's term for `word` (one of `codes`) in `namespace`: the namespace's
/// length, the namespace, the code and the word. All of a namespace's words with one code share
/// the prefix [`sound_prefix`], so a misheard word's sound-alikes in the user's own memories are
/// one range of the term dictionary; the length keeps one namespace's prefix from being another's.
pub fn sound_term(namespace: &str, code: &str, word: &str) -> String {
    format!("{}{word}", sound_prefix(namespace, code))
}

/// The prefix of every [`sound_term`] of `namespace` with `code`.
pub fn sound_prefix(namespace: &str, code: &str) -> String {
    format!("{}:{namespace}\u{1f}{code}\u{1f}", namespace.len())
}

/// The fewest single-letter edits (insert, delete, substitute) from `a` to `b` (ASCII words).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let next = (diagonal + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Double Metaphone reads "TIA" and "TIO" as in "nation" (X) even at the start of a word, where
/// names say a plain T (Tiago, Tiana): such a word also gets the code of its plain-T reading
/// ("tyago"), which is also Diego's.
fn plain_initial_t(word: &str) -> Option<String> {
    let rest = word.strip_prefix("ti")?;
    matches!(rest.bytes().next(), Some(b'a' | b'o')).then(|| format!("ty{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sounds_alike(a: &str, b: &str) -> bool {
        let e = PhoneticEncoder::default();
        let (a, b) = (e.codes(a), e.codes(b));
        a.iter().any(|c| b.contains(c))
    }

    #[test]
    fn misheard_names_share_a_code() {
        for (said, heard) in [
            ("Marta", "Martha"),
            // Only through the plain-T reading (Double Metaphone alone: XK and TK).
            ("Tiago", "Diego"),
            ("Catherine", "Kathryn"),
            ("Jon", "John"),
            ("Steven", "Stephen"),
            ("Zoe", "Zoey"),
            ("Aisha", "Ayesha"),
            ("Mohammed", "Muhammad"),
            ("Philip", "Filip"),
            ("Geoff", "Jeff"),
            ("Python", "Pithon"),
            ("Debian", "Debbian"),
            ("SQLite", "Sequelite"),
        ] {
            assert!(sounds_alike(said, heard), "{said} / {heard}");
        }
    }

    #[test]
    fn different_names_do_not() {
        for (a, b) in [
            ("Marta", "Maria"),
            ("Tiago", "Pablo"),
            ("Rex", "Max"),
            ("Debian", "Ubuntu"),
            // Known misses of Double Metaphone: Irish spellings.
            ("Sean", "Shaun"),
            ("Niamh", "Neeve"),
        ] {
            assert!(!sounds_alike(a, b), "{a} / {b}");
        }
    }

    #[test]
    fn known_double_metaphone_codes() {
        // Values of the reference implementation (Lawrence Philips' / Apache Commons Codec's).
        let m = DoubleMetaphone::default();
        for (word, primary, alternate) in [
            ("Thomas", "TMS", "TMS"),
            ("Smith", "SM0", "XMT"),
            ("Schmidt", "XMT", "SMT"),
            ("Martha", "MR0", "MRT"),
            ("Jose", "HS", "HS"),
            ("Xavier", "SF", "SFR"),
        ] {
            let r = m.double_metaphone(word);
            assert_eq!(
                (r.primary().as_str(), r.alternate().as_str()),
                (primary, alternate),
                "{word}"
            );
        }
    }

    #[test]
    fn names_are_told_by_their_capital_when_the_text_has_case() {
        let e = PhoneticEncoder::default();
        // A capitalised stop word ("Where") is no content word; "font" is not capitalised.
        let names = e
            .name_like_words("Where does Martha live, and is Zoë's font ok?")
            .unwrap();
        assert_eq!(names, HashSet::from(["martha".into(), "zoe".into()]));
        // All one case: casing says nothing.
        assert!(e.name_like_words("where does martha live").is_none());
        assert!(e.name_like_words("WHERE DOES MARTHA LIVE").is_none());
    }

    #[test]
    fn edit_distance_counts_single_letter_edits() {
        for (a, b, d) in [
            ("marta", "martha", 1),
            ("tiago", "diego", 2),
            ("", "abc", 3),
            ("abc", "abc", 0),
            ("kitten", "sitting", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} / {b}");
            assert_eq!(edit_distance(b, a), d, "{b} / {a}");
        }
    }

    #[test]
    fn a_namespace_prefix_is_never_another_namespaces() {
        // "ab" + "c..." and "a" + "bc..." must not share a prefix.
        assert!(!sound_term("ab", "MRT", "marta").starts_with(&sound_prefix("a", "MRT")));
        assert!(sound_term("a", "MRT", "marta").starts_with(&sound_prefix("a", "MRT")));
        assert!(!sound_term("a", "MRTN", "martin").starts_with(&sound_prefix("a", "MRT")));
    }

    #[test]
    fn only_content_words_get_codes() {
        let e = PhoneticEncoder::default();
        // Stop words, one-letter words and numbers are left out; accents fold; case is ignored.
        assert_eq!(e.codes("what is it about, 42 x?"), Vec::<String>::new());
        assert_eq!(e.codes("Zoë"), e.codes("zoe"));
        assert_eq!(field_text(&e.words("Marta marta MARTA")), "MRT");
        assert!(e.codes("").is_empty());
    }
}
