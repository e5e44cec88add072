//! `voicerag demo --fast --json` runs to completion on the real int8 MiniLM, every final utterance
//! answered, and its summary agrees with its lines.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn demo_fast_json_answers_every_final_utterance() {
    let model = root().join("models/all-MiniLM-L6-v2/model.onnx");
    if !model.exists() {
        assert!(
            std::env::var("VOICERAG_REQUIRE_MODELS").as_deref() != Ok("1"),
            "{} is missing: run `make setup`",
            model.display()
        );
        eprintln!("SKIPPED: {} is missing (run `make setup`)", model.display());
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_voicerag"))
        .current_dir(root())
        .args(["--config", "config.toml", "demo", "--fast", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let (summary, results) = lines.split_last().expect("at least a summary line");
    let summary = &summary["summary"];

    let session =
        std::fs::read_to_string(root().join("fixtures/conversations/session.jsonl")).unwrap();
    let finals: Vec<String> = session
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "final")
        .map(|e| e["utterance"].as_str().unwrap().to_string())
        .collect();
    let answered: Vec<String> = results
        .iter()
        .filter(|r| r["final"] == true)
        .map(|r| r["utterance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        answered.len(),
        finals.len(),
        "exactly one result per final utterance"
    );
    for u in &finals {
        assert!(answered.contains(u), "final {u} unanswered");
    }
    assert_eq!(summary["finals"], finals.len());
    assert_eq!(summary["answered"], answered.len());
    let met = results
        .iter()
        .filter(|r| r["final"] == true && r["deadline_met"] == true)
        .count();
    assert_eq!(summary["deadline_met"], met);
    let degraded = results
        .iter()
        .filter(|r| r["final"] == true && !r["degraded"].is_null())
        .count();
    assert_eq!(summary["degraded"], degraded);
    for r in results {
        assert!(r["timings_ms"]["total"].is_number(), "{r}");
        for hit in r["hits"].as_array().unwrap() {
            // Only alice's memories: bob's (ids b-...) must never appear.
            assert!(
                !hit["id"].as_str().unwrap().starts_with("b-"),
                "another user's memory leaked: {hit}"
            );
        }
    }
    // The seeded memory that answers the first question is recalled.
    let first = results
        .iter()
        .find(|r| r["utterance"] == "u1" && r["final"] == true)
        .unwrap();
    let ids: Vec<&str> = first["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"c-0519/u1"),
        "vet appointment not recalled: {ids:?}"
    );
}
