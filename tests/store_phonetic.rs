//! The phonetic capability (issue 14 item 4): a name the recogniser spelt another way still
//! finds its memory, through the third ranking and through sound-alike words (a word the
//! user's memories lack is searched as their words that sound the same); only words the
//! namespace has never seen are sounded out; both can be turned off; an index from before the
//! phonetic fields is rebuilt. Synthetic embeddings, no model.

mod store_support;

use store_support::*;
use voicerag::actors::messages::SearchMode;
use voicerag::store::{Fusion, MemoryStore, RetrievalConfig};

fn with_weight(weight: f32) -> RetrievalConfig {
    RetrievalConfig {
        phonetic_weight: weight,
        ..RetrievalConfig::default()
    }
}

/// Friends' birthdays and favours: each name once, the rest shared words, so without the
/// names nothing tells the memories apart.
fn people() -> Vec<voicerag::store::NewMemory> {
    vec![
        simple("u", "ana", "Ana's birthday is in June, she likes books"),
        simple("u", "pablo", "Pablo's birthday is in June, he likes books"),
        simple("u", "tom", "Tom's birthday is in June, he likes books"),
        simple("u", "marta", "Marta's birthday is in June, she likes books"),
        simple("u", "tiago", "Tiago's birthday is in June, he likes books"),
        simple("u", "pedro", "Pedro lent me his ladder last week"),
        simple("u", "rosa", "Rosa lent me her bike last week"),
    ]
}

/// Neither the third ranking nor sound-alike words.
fn phonetic_off() -> RetrievalConfig {
    RetrievalConfig {
        phonetic_weight: 0.0,
        sound_alike_words: false,
        ..RetrievalConfig::default()
    }
}

/// Sound-alike words alone (no third ranking).
fn sound_alikes_only(on: bool) -> RetrievalConfig {
    RetrievalConfig {
        phonetic_weight: 0.0,
        sound_alike_words: on,
        ..RetrievalConfig::default()
    }
}

fn top_bm25(store: &MemoryStore, ns: &str, text: &str) -> Vec<String> {
    ids(&store
        .search(&request(ns, text, SearchMode::Bm25, 3))
        .unwrap())
}

fn top(store: &MemoryStore, text: &str) -> Vec<String> {
    ids(&store
        .search(&request("u", text, SearchMode::Hybrid, 3))
        .unwrap())
}

fn store_with(dir: &std::path::Path, retrieval: RetrievalConfig) -> MemoryStore {
    let store = MemoryStore::open(dir, &fast_config(), &retrieval, &model()).unwrap();
    store.add(people()).unwrap();
    store.flush().unwrap();
    store
}

#[test]
fn a_misheard_name_finds_its_memory_only_with_the_phonetic_capability() {
    let (on_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = store_with(on_dir.path(), RetrievalConfig::default());
    let off = store_with(off_dir.path(), phonetic_off());
    assert!(RetrievalConfig::default().phonetic_weight > 0.0);
    for (heard, said) in [
        ("when is Martha's birthday", "marta"),
        ("when is martha's birthday", "marta"),
        ("when is Diego's birthday", "tiago"),
    ] {
        assert_eq!(top(&on, heard)[0], said, "{heard}: {:?}", top(&on, heard));
        // Without it the name is just an unknown word: another memory comes first.
        assert_ne!(top(&off, heard)[0], said, "{heard} (off)");
    }
}

#[test]
fn known_words_are_not_sounded_out_so_clean_queries_rank_as_before() {
    let (on_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = store_with(on_dir.path(), RetrievalConfig::default());
    let off = store_with(off_dir.path(), phonetic_off());
    // "Rosa" and "Ana" are in the memories as said: the same ranking and scores either way.
    for q in ["when is Ana's birthday", "who lent me a bike, was it Rosa"] {
        let a = on.search(&request("u", q, SearchMode::Hybrid, 7)).unwrap();
        let b = off.search(&request("u", q, SearchMode::Hybrid, 7)).unwrap();
        assert_eq!(
            a.iter().map(|h| (&h.id, h.score)).collect::<Vec<_>>(),
            b.iter().map(|h| (&h.id, h.score)).collect::<Vec<_>>(),
            "{q}"
        );
    }
}

#[test]
fn another_namespace_knowing_the_word_does_not_switch_it_off() {
    let dir = tempfile::tempdir().unwrap();
    // A weight that lets the sound decide (the other namespace's Martha lowers the code's
    // weight in the shared index): what is tested is that the phonetic search runs at all.
    let store = store_with(dir.path(), with_weight(0.5));
    // Another user does have a Martha: this user's "Martha" is still unknown here.
    store
        .add(vec![simple("other", "m", "Martha's birthday is in June")])
        .unwrap();
    store.flush().unwrap();
    assert_eq!(top(&store, "when is Martha's birthday")[0], "marta");
    assert_eq!(
        ids(&store
            .search(&request(
                "other",
                "when is Martha's birthday",
                SearchMode::Hybrid,
                3
            ))
            .unwrap()),
        ["m"]
    );
}

#[test]
fn sound_alikes_never_cross_namespaces_or_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), RetrievalConfig::default());
    // Nobody in "other" sounds like Martha: no hit of "u" leaks.
    store
        .add(vec![simple("other", "x", "the boiler was fixed")])
        .unwrap();
    store.flush().unwrap();
    let hits = store
        .search(&request("other", "Martha", SearchMode::Hybrid, 5))
        .unwrap();
    assert!(hits.iter().all(|h| h.id == "x"), "{:?}", ids(&hits));
    let mut req = request("u", "Martha", SearchMode::Hybrid, 5);
    req.filter.conversation = Some("elsewhere".into());
    assert!(store.search(&req).unwrap().is_empty());
}

#[test]
fn a_misheard_word_is_searched_as_the_users_own_sound_alike() {
    // BM25 alone, no third ranking: only the corrected word can find the memory.
    let (on_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = store_with(on_dir.path(), sound_alikes_only(true));
    let off = store_with(off_dir.path(), sound_alikes_only(false));
    for (heard, said) in [
        ("Martha", "marta"),
        ("when is Diego's birthday", "tiago"),
        ("Pedroh", "pedro"),
    ] {
        assert_eq!(
            top_bm25(&on, "u", heard).first(),
            Some(&said.to_string()),
            "{heard}"
        );
        let without = top_bm25(&off, "u", heard);
        assert_ne!(without.first(), Some(&said.to_string()), "{heard} (off)");
    }
    // Only misheard words are corrected: a query whose words the memories have ranks alike.
    let q = "who lent me a bike, was it Rosa";
    assert_eq!(top_bm25(&on, "u", q), top_bm25(&off, "u", q));
}

#[test]
fn a_sound_alike_spelt_too_differently_is_left_to_the_phonetic_ranking() {
    // "Smith" and "Schmidt" share a code (XMT) but are four edits apart in seven letters: no
    // correction (a bound that let them through would also let "kill" stand for "gil"), and
    // the third ranking still finds him.
    let add_schmidt = |store: &MemoryStore| {
        store
            .add(vec![simple(
                "u",
                "schmidt",
                "Schmidt's birthday is in June, he likes books",
            )])
            .unwrap();
        store.flush().unwrap();
    };
    let (on_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ranking = store_with(on_dir.path(), RetrievalConfig::default());
    let words_only = store_with(off_dir.path(), sound_alikes_only(true));
    add_schmidt(&ranking);
    add_schmidt(&words_only);
    let q = "when is Smith's birthday";
    assert_eq!(top(&ranking, q)[0], "schmidt", "{:?}", top(&ranking, q));
    assert_ne!(
        top(&words_only, q)[0],
        "schmidt",
        "{:?}",
        top(&words_only, q)
    );
}

#[test]
fn sound_alike_words_come_from_the_users_own_live_memories() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), sound_alikes_only(true));
    store
        .add(vec![simple("other", "m", "Martha sold her boat")])
        .unwrap();
    store.flush().unwrap();
    // "other" has no Tiago: "u"'s word is not its sound-alike, and no hit of "u" leaks.
    assert!(top_bm25(&store, "other", "Diego").is_empty());
    // Each namespace corrects to its own spelling.
    assert_eq!(top_bm25(&store, "other", "Marta"), ["m"]);
    assert_eq!(top_bm25(&store, "u", "Martha"), ["marta"]);
    // A forgotten memory's words stop being sound-alikes (the index keeps a deleted document's
    // terms until a merge).
    assert_eq!(store.delete_ids("u", &["marta".to_string()]).unwrap(), 1);
    store.flush().unwrap();
    assert!(top_bm25(&store, "u", "Martha").is_empty());
}

#[test]
fn reciprocal_rank_fusion_uses_the_phonetic_list_too() {
    // Sound-alike words off: Martha is left to the ranking.
    let rrf = |weight: f32| RetrievalConfig {
        fusion: Fusion::Rrf,
        phonetic_weight: weight,
        sound_alike_words: false,
        ..RetrievalConfig::default()
    };
    let (on_dir, off_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = store_with(on_dir.path(), rrf(1.0));
    let off = store_with(off_dir.path(), rrf(0.0));
    let score = |store: &MemoryStore| {
        store
            .search(&request(
                "u",
                "when is Martha's birthday",
                SearchMode::Hybrid,
                10,
            ))
            .unwrap()
            .into_iter()
            .find(|h| h.id == "marta")
            .map(|h| h.score)
    };
    // Marta is first by sound alone: the list adds weight / (k + 1) to her score.
    let gained = score(&on).unwrap() - score(&off).unwrap();
    assert!((gained - 1.0 / 61.0).abs() < 1e-6, "{gained}");
}

#[test]
fn an_index_from_before_the_phonetic_field_is_rebuilt_on_open() {
    use tantivy::schema::{
        FAST, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), RetrievalConfig::default()));
    // Put back an (empty) index of the current text analysis without the phonetic field, as
    // the voicerag before it left it.
    let bm25 = dir.path().join("bm25");
    std::fs::remove_dir_all(&bm25).unwrap();
    std::fs::create_dir(&bm25).unwrap();
    let mut b = Schema::builder();
    b.add_u64_field("chunk", INDEXED | FAST);
    for name in ["ns", "id", "conversation", "speaker"] {
        b.add_text_field(name, STRING);
    }
    b.add_i64_field("ts", INDEXED | FAST);
    b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("voicerag_en_v2")
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    tantivy::Index::create_in_dir(&bm25, b.build()).unwrap();

    // A read-only process may meet the old index first: it searches, without the phonetic list.
    let ro = MemoryStore::open_read_only(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    assert!(
        ro.search(&request(
            "u",
            "when is Martha's birthday",
            SearchMode::Hybrid,
            3
        ))
        .is_ok()
    );
    drop(ro);

    let store = MemoryStore::open(
        dir.path(),
        &fast_config(),
        &RetrievalConfig::default(),
        &model(),
    )
    .unwrap();
    store.flush().unwrap();
    assert_eq!(top(&store, "when is Martha's birthday")[0], "marta");
    assert_eq!(top(&store, "when is Diego's birthday")[0], "tiago");
}
