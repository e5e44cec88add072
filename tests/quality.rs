//! Retrieval quality with the real int8 MiniLM (built by `make setup`):
//! - the CLI contract on `../shared/eval/debfaq` (`ingest`, then `query --batch --json`), where
//!   the Python system voicerag replaces scores hybrid MRR@10 0.666 / recall@10 0.899;
//! - `voicerag eval` on the dev sets in `fixtures/eval/` (built by `tools/make_devsets.py`):
//!   each held at its measured hybrid MRR@10 and recall@10 minus a stated margin, hybrid at
//!   least vector-only, few hits for no-answer queries, and two ingests scoring the same.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Missing inputs fail under `make test` (VOICERAG_REQUIRE_MODELS=1) and skip loudly elsewhere.
fn require(path: &std::path::Path) -> bool {
    if path.exists() {
        return true;
    }
    assert!(
        std::env::var("VOICERAG_REQUIRE_MODELS").as_deref() != Ok("1"),
        "{} is missing: run `make setup`",
        path.display()
    );
    eprintln!("SKIPPED: {} is missing (run `make setup`)", path.display());
    false
}

fn scores(queries: &str, results: &str) -> (f64, f64, usize) {
    let relevant: HashMap<String, Vec<String>> = queries
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let rel = v["relevant"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (v["id"].as_str().unwrap().to_string(), rel)
        })
        .collect();
    let (mut rr, mut hits, mut answered) = (0.0, 0usize, 0usize);
    for line in results.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let rel = &relevant[v["id"].as_str().unwrap()];
        answered += 1;
        // Top-k means top-k for a query: the prompt-size cap never cuts it.
        assert_eq!(v["capped"], 0, "{line}");
        assert!(v["hits"].as_array().unwrap().len() <= 10);
        let ids: Vec<&str> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .take(10)
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        if let Some(rank) = ids.iter().position(|id| rel.iter().any(|r| r == id)) {
            rr += 1.0 / (rank as f64 + 1.0);
            hits += 1;
        }
    }
    let n = relevant.len() as f64;
    (rr / n, hits as f64 / n, answered)
}

#[test]
fn debfaq_hybrid_holds_the_python_baseline() {
    let model = root().join("models/all-MiniLM-L6-v2/model.onnx");
    let eval = std::env::var("VOICERAG_EVAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/eval/debfaq"));
    if !require(&model) || !require(&eval.join("queries.jsonl")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_voicerag");
    let base = |cmd: &mut Command| {
        cmd.current_dir(root())
            .env("VOICERAG_STORE__DATA_DIR", tmp.path().join("data"))
            .env("VOICERAG_PIPELINE__BUDGET_MS", "5000")
            .env("VOICERAG_PIPELINE__TOP_K", "10")
            .arg("--config")
            .arg(root().join("config.toml"));
    };
    let mut ingest = Command::new(bin);
    base(&mut ingest);
    let out = ingest
        .arg("ingest")
        .arg(eval.join("corpus.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queries = std::fs::read_to_string(eval.join("queries.jsonl")).unwrap();
    let mut hybrid = None;
    for mode in ["hybrid", "vector", "bm25"] {
        let mut q = Command::new(bin);
        base(&mut q);
        let out = q
            .args([
                "query", "--json", "--top-k", "10", "--mode", mode, "--batch",
            ])
            .arg(eval.join("queries.jsonl"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (mrr, recall, answered) = scores(&queries, &String::from_utf8_lossy(&out.stdout));
        eprintln!("debfaq {mode:<6}: MRR@10 {mrr:.4}  recall@10 {recall:.4}  answered {answered}");
        assert_eq!(
            answered,
            queries.lines().count(),
            "every query answered in {mode} mode"
        );
        if mode == "hybrid" {
            hybrid = Some((mrr, recall));
        }
    }
    let (mrr, recall) = hybrid.unwrap();
    assert!(
        mrr >= 0.666,
        "hybrid MRR@10 {mrr:.4} fell below the Python baseline 0.666"
    );
    assert!(recall >= 0.85, "hybrid recall@10 {recall:.4}");
}

// Measured with `voicerag eval fixtures/eval/SET --json` (release build, 2-core x86-64). The
// phonetic ranking (issue 14 item 4) moved debfaq from 0.703 and pyfaq from 0.7784 (one query
// of 171 one rank down); recall did not move.
const MRR_DEBFAQ: f64 = 0.7091;
const RECALL_DEBFAQ: f64 = 0.9244;
const MRR_PYFAQ: f64 = 0.7755;
const RECALL_PYFAQ: f64 = 0.9532;
const MRR_SQLITEFAQ: f64 = 0.8722;
const RECALL_SQLITEFAQ: f64 = 1.0;

/// One dev set's floor: its measured hybrid figures (release build, this machine; see the
/// README) less the stated margins, and the most hits a no-answer query may get on average.
struct Held {
    set: &'static str,
    mrr: f64,
    recall: f64,
    margin: f64,
    noanswer_hits: f64,
}

const HELD: [Held; 3] = [
    Held {
        set: "debfaq",
        mrr: MRR_DEBFAQ,
        recall: RECALL_DEBFAQ,
        margin: 0.02,
        noanswer_hits: 1.5,
    },
    Held {
        set: "pyfaq",
        mrr: MRR_PYFAQ,
        recall: RECALL_PYFAQ,
        margin: 0.02,
        noanswer_hits: 4.5,
    },
    // 26 answerable queries: one query moves recall by 0.04, so a wider margin.
    Held {
        set: "sqlitefaq",
        mrr: MRR_SQLITEFAQ,
        recall: RECALL_SQLITEFAQ,
        margin: 0.05,
        noanswer_hits: 2.5,
    },
];

fn eval(set: &std::path::Path, mode: &str) -> serde_json::Value {
    eval_with(set, mode, &[])
}

/// `eval` with extra environment settings (`VOICERAG_...` overrides).
fn eval_with(set: &std::path::Path, mode: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_voicerag"))
        .current_dir(root())
        .envs(env.iter().copied())
        // Quality, not latency: a debug build must not run out of budget.
        .env("VOICERAG_PIPELINE__BUDGET_MS", "10000")
        .arg("--config")
        .arg(root().join("config.toml"))
        .args(["eval", "--json", "--mode", mode])
        .arg(set)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dev_sets_hold_their_measured_quality_and_hybrid_beats_vector_only() {
    let model = root().join("models/all-MiniLM-L6-v2/model.onnx");
    if !require(&model) {
        return;
    }
    for held in HELD {
        let dir = root().join("fixtures/eval").join(held.set);
        let hybrid = eval(&dir, "hybrid");
        let vector = eval(&dir, "vector");
        let (mrr, recall) = (
            hybrid["mrr@10"].as_f64().unwrap(),
            hybrid["recall@10"].as_f64().unwrap(),
        );
        let vector_mrr = vector["mrr@10"].as_f64().unwrap();
        eprintln!(
            "{}: hybrid {hybrid}\n{}: vector {vector}",
            held.set, held.set
        );
        assert!(
            mrr >= held.mrr - held.margin,
            "{}: hybrid MRR@10 {mrr} below {} - {}",
            held.set,
            held.mrr,
            held.margin
        );
        assert!(
            recall >= held.recall - held.margin,
            "{}: hybrid recall@10 {recall} below {} - {}",
            held.set,
            held.recall,
            held.margin
        );
        assert!(
            mrr >= vector_mrr,
            "{}: hybrid MRR@10 {mrr} below vector-only {vector_mrr}",
            held.set
        );
        let noanswer = hybrid["noanswer_hits_mean"].as_f64().unwrap();
        assert!(
            noanswer <= held.noanswer_hits,
            "{}: {noanswer} hits per no-answer query (at most {})",
            held.set,
            held.noanswer_hits
        );
    }
}

#[test]
fn two_ingests_of_one_set_score_the_same() {
    let model = root().join("models/all-MiniLM-L6-v2/model.onnx");
    if !require(&model) {
        return;
    }
    let dir = root().join("fixtures/eval/debfaq");
    let (a, b) = (eval(&dir, "hybrid"), eval(&dir, "hybrid"));
    for key in [
        "mrr@10",
        "recall@1",
        "recall@5",
        "recall@10",
        "ndcg@10",
        "noanswer_hits_mean",
    ] {
        assert_eq!(a[key], b[key], "{key}: {a} vs {b}");
    }
}

/// Names the recogniser misheard (issue 14 item 4): debfaq's queries that name something, with
/// the names respelt as they sound ("Debbian", "Linuks"; `fixtures/eval/debfaq-misheard`, built by
/// `tools/make_misheard.py`), gain from the phonetic ranking, and the clean set loses nothing.
/// Measured (hybrid MRR@10 / recall@10, phonetic off -> on): misheard 0.6656 / 0.8889 -> 0.6867 /
/// 0.8889 (their clean twins, debfaq-named: 0.6786 / 0.8889); clean 0.7030 / 0.9244 -> 0.7091 /
/// 0.9244.
const MRR_DEBFAQ_MISHEARD: f64 = 0.6867;

#[test]
fn misheard_names_gain_from_the_phonetic_ranking_and_clean_queries_lose_nothing() {
    let model = root().join("models/all-MiniLM-L6-v2/model.onnx");
    if !require(&model) {
        return;
    }
    let off = [("VOICERAG_RETRIEVAL__PHONETIC_WEIGHT", "0")];
    // (set, least MRR@10 gain of the phonetic ranking)
    for (set, gain) in [("debfaq-misheard", 0.015), ("debfaq", 0.0)] {
        let dir = root().join("fixtures/eval").join(set);
        let (with, without) = (eval(&dir, "hybrid"), eval_with(&dir, "hybrid", &off));
        eprintln!("{set}: phonetic on {with}\n{set}: phonetic off {without}");
        let metric = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        assert!(
            metric(&with, "mrr@10") >= metric(&without, "mrr@10") + gain,
            "{set}: MRR@10 {} with the phonetic ranking, {} without (gain at least {gain})",
            metric(&with, "mrr@10"),
            metric(&without, "mrr@10")
        );
        for k in ["recall@5", "recall@10"] {
            assert!(metric(&with, k) >= metric(&without, k), "{set}: {k}");
        }
        assert!(
            metric(&with, "noanswer_hits_mean") <= metric(&without, "noanswer_hits_mean"),
            "{set}: sound-alikes pulled hits into no-answer queries"
        );
        if set == "debfaq-misheard" {
            assert!(metric(&with, "mrr@10") >= MRR_DEBFAQ_MISHEARD - 0.02);
        }
    }
}
