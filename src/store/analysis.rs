//! English text analysis for BM25, the same on the index and the query side: split on
//! non-alphanumerics, drop absurdly long tokens, lower-case, fold accents to ASCII, drop stop
//! words, stem (Snowball English).
//!
//! The stop list is the usual full English one, not Lucene's 33 words: a question ("how do I
//! ...", "what is my ...") would otherwise match every memory holding "how", "do" and "I".
//! Possessives need no filter of their own: the tokenizer splits "Rex's" into "rex" and "s", and
//! "s" is a stop word.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};

/// The analyzer's name in the index schema. A new analysis gets a new name, so an index built
/// by an older one is recognised (and rebuilt by the writer).
pub const ANALYZER: &str = "voicerag_en_v2";
/// The first analyzer (Lucene's stop list, no folding): still registered, so a read-only process
/// can search an index the writer has not rebuilt yet.
pub const ANALYZER_V1: &str = "voicerag_en";

/// English stop words (the Snowball / NLTK list without "will" and "don", which are also names,
/// and without contractions, which the tokenizer splits anyway).
pub(super) const STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "just",
    "should",
    "now",
    "d",
    "ll",
    "m",
    "o",
    "re",
    "ve",
    "y",
    "ain",
    "aren",
    "couldn",
    "didn",
    "doesn",
    "hadn",
    "hasn",
    "haven",
    "isn",
    "ma",
    "mightn",
    "mustn",
    "needn",
    "shan",
    "shouldn",
    "wasn",
    "weren",
    "won",
    "wouldn",
];

/// Tokens longer than this many bytes are dropped (base64 blobs, URLs glued together).
pub(super) const LONGEST_TOKEN: usize = 40;

/// The current analyzer.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(LONGEST_TOKEN))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::remove(
            STOP_WORDS.iter().map(|w| w.to_string()),
        ))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The first analyzer, for indexes built before [`ANALYZER`].
pub fn analyzer_v1() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(LONGEST_TOKEN))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// The analysed terms of `text` under `analyzer`, deduplicated, in first-seen order.
pub fn terms(analyzer: &TextAnalyzer, text: &str) -> Vec<String> {
    let mut analyzer = analyzer.clone();
    let mut stream = analyzer.token_stream(text);
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    while stream.advance() {
        let t = &stream.token().text;
        if seen.insert(t.clone()) {
            out.push(t.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_lose_their_function_words() {
        let a = analyzer();
        assert_eq!(terms(&a, "How do I install Debian?"), ["instal", "debian"]);
        assert_eq!(terms(&a, "What is my sister's name"), ["sister", "name"]);
    }

    #[test]
    fn accents_fold_and_names_survive() {
        let a = analyzer();
        assert_eq!(terms(&a, "Café with Will and Don"), ["cafe", "will", "don"]);
        assert_eq!(terms(&a, "Zoë's zoe"), ["zoe"]);
    }

    #[test]
    fn the_first_analyzer_still_keeps_question_words() {
        assert_eq!(
            terms(&analyzer_v1(), "How do I install"),
            ["how", "do", "i", "instal"]
        );
    }
}
