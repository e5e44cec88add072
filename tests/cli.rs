//! The command-line contract: exit codes, stdout/stderr discipline, JSON shape, bad input.
//! Runs the real binary on the tiny fixture models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with config from the environment only: fixture models, a given data dir.
fn voicerag(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voicerag"));
    cmd.current_dir(data.parent().unwrap_or(data))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "VOICERAG_EMBEDDER__MODEL_DIR",
            root().join("fixtures/models/tiny-embedder"),
        )
        .env("VOICERAG_STORE__DATA_DIR", data)
        .env("VOICERAG_STORE__MAP_SIZE_MIB", "64")
        .env("VOICERAG_PIPELINE__BUDGET_MS", "2000")
        .env(
            "VOICERAG_RUNTIME__LIBRARY",
            root().join("runtime/libonnxruntime.so"),
        );
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("voicerag binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const MEMORIES: &str = r#"{"id":"m1","text":"my dog Rex loves the beach","conversation":"c1","speaker":"user"}
{"id":"m2","text":"the train to Lisbon leaves at nine","conversation":"c1","speaker":"user"}
{"id":"m3","text":"I am allergic to peanuts","namespace":"bob"}
"#;

#[test]
fn ingest_reports_bad_lines_and_stores_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let input =
        format!("{MEMORIES}{{\"text\":\"no id\"}}\n{{\"id\":\"e\",\"text\":\"   \"}}\nnot json\n");
    let file = write(tmp.path(), "in.jsonl", &input);
    let out = run(voicerag(&data).arg("ingest").arg(&file));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(stdout(&out).is_empty(), "ingest prints nothing on stdout");
    assert!(err.contains("line 4: missing \"id\""), "{err}");
    assert!(err.contains("line 5:") && err.contains("empty"), "{err}");
    assert!(err.contains("line 6: not valid JSON"), "{err}");
    assert!(err.contains("3 stored, 0 duplicate, 3 rejected"), "{err}");

    // Re-ingesting is idempotent: duplicates, nothing new.
    let again = run(voicerag(&data).arg("ingest").arg(&file));
    assert!(
        stderr(&again).contains("0 stored, 3 duplicate, 3 rejected"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn ingest_with_nothing_stored_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "bad.jsonl", "{\"text\":\"x\"}\n\u{0}garbage\n");
    let out = run(voicerag(&tmp.path().join("data")).arg("ingest").arg(&file));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn query_json_has_the_contract_fields_and_respects_namespaces() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = write(tmp.path(), "in.jsonl", MEMORIES);
    assert!(
        run(voicerag(&data).arg("ingest").arg(&file))
            .status
            .success()
    );
    let queries = write(
        tmp.path(),
        "q.jsonl",
        "{\"id\":\"qa\",\"text\":\"peanuts allergy\"}\n{\"id\":\"qb\",\"text\":\"peanuts allergy\",\"namespace\":\"bob\"}\n{\"id\":\"qc\",\"text\":\"Rex: \\\"beach\\\" -dog\",\"mode\":\"bm25\"}\n",
    );
    let out = run(voicerag(&data)
        .args(["query", "--json", "--batch"])
        .arg(&queries));
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout is JSON lines only"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], "qa");
    for key in ["embed", "search", "rerank", "total"] {
        assert!(
            lines[0]["timings_ms"][key].is_number(),
            "timings_ms.{key}: {}",
            lines[0]
        );
    }
    assert_eq!(lines[0]["rerank"], "off");
    assert_eq!(lines[0]["timings_ms"]["rerank"], 0.0);
    assert!(lines[0]["deadline_met"].is_boolean());
    assert!(lines[0].get("degraded").is_some());
    // Namespace "default" never sees bob's memory; bob's query finds it.
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!ids(&lines[0]).contains(&"m3".to_string()));
    assert_eq!(ids(&lines[1]), vec!["m3".to_string()]);
    // ASR punctuation is never a query syntax error.
    assert_eq!(ids(&lines[2]).first().map(String::as_str), Some("m1"));
    let hit = &lines[0]["hits"][0];
    assert!(hit["score"].is_number() && hit["text"].is_string(), "{hit}");
}

#[test]
fn forget_removes_a_conversation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = write(tmp.path(), "in.jsonl", MEMORIES);
    assert!(
        run(voicerag(&data).arg("ingest").arg(&file))
            .status
            .success()
    );
    let out = run(voicerag(&data).args(["forget", "--conversation", "c1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 memories removed"),
        "{}",
        stderr(&out)
    );
    let q = run(voicerag(&data).args(["query", "--json", "--mode", "bm25", "Rex beach"]));
    let v: serde_json::Value = serde_json::from_str(stdout(&q).trim()).unwrap();
    assert_eq!(v["hits"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let unknown = write(tmp.path(), "u.toml", "[pipeline]\nbudget_msec = 5\n");
    let out = run(voicerag(&data)
        .arg("--config")
        .arg(&unknown)
        .args(["config", "check"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("budget_msec"), "{}", stderr(&out));

    let out = run(voicerag(&data)
        .env("VOICERAG_PIPELINE__BUDGET_MS", "0")
        .args(["config", "check"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pipeline.budget_ms"),
        "{}",
        stderr(&out)
    );

    let out = run(voicerag(&data)
        .env("VOICERAG_PIPELINE__TOP_K", "0")
        .args(["config", "check"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pipeline.top_k"), "{}", stderr(&out));

    let out = run(voicerag(&data)
        .env("VOICERAG_EMBEDDER__MODEL_DIR", tmp.path())
        .args(["config", "check"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("embedder.model_dir") && stderr(&out).contains("model.onnx"),
        "{}",
        stderr(&out)
    );

    let ok = run(voicerag(&data).args(["config", "check"]));
    assert!(ok.status.success(), "{}", stderr(&ok));
    let effective: toml::Table = stdout(&ok).parse().expect("config check prints TOML");
    assert_eq!(
        effective["pipeline"]["budget_ms"].as_integer(),
        Some(2000),
        "env overrides the default"
    );
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(voicerag(&tmp.path().join("d")).args(["query", "--mode", "fuzzy", "x"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn query_on_a_store_another_process_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = write(tmp.path(), "in.jsonl", MEMORIES);
    assert!(
        run(voicerag(&data).arg("ingest").arg(&file))
            .status
            .success()
    );
    // A writer holds the store: a second writer is refused, a reader is served.
    let mut serve = voicerag(&data)
        .args(["ingest", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = run(voicerag(&data).arg("ingest").arg(&file));
    assert_eq!(
        second.status.code(),
        Some(1),
        "second writer must be refused: {}",
        stderr(&second)
    );
    assert!(
        stderr(&second).to_lowercase().contains("lock"),
        "{}",
        stderr(&second)
    );
    let q = run(voicerag(&data).args(["query", "--json", "--mode", "bm25", "train Lisbon"]));
    assert!(q.status.success(), "{}", stderr(&q));
    assert!(stdout(&q).contains("\"m2\""), "{}", stdout(&q));
    drop(serve.stdin.take());
    let _ = serve.wait();
}

#[test]
fn query_flags_for_time_and_replaced_facts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = write(
        tmp.path(),
        "facts.jsonl",
        r#"{"id":"m1","text":"Rex's vet appointment is on Tuesday","ts":"2026-03-02T10:00:00Z"}
{"id":"m2","text":"the vet moved Rex's appointment to Friday","ts":"2026-03-04T10:00:00Z","supersedes":["m1"]}
{"id":"m3","text":"the vet gate code is 4711","ts":"2026-03-04T11:00:00Z","expires_at":"2026-03-06T00:00:00Z"}
"#,
    );
    assert!(
        run(voicerag(&data).arg("ingest").arg(&file))
            .status
            .success()
    );
    let query = |extra: &[&str]| -> serde_json::Value {
        let out = run(voicerag(&data)
            .args([
                "query",
                "--json",
                "--mode",
                "bm25",
                "--now",
                "2026-03-10T12:00:00Z",
            ])
            .args(extra));
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(stdout(&out).trim()).expect("one JSON line")
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    // Replaced and expired facts leave default results; the flag brings them back.
    assert_eq!(ids(&query(&["vet"])), vec!["m2"]);
    assert_eq!(
        ids(&query(&["--include-superseded", "vet"])),
        vec!["m1", "m2", "m3"]
    );
    // The time window read from the query is in the JSON line; the flag turns reading off.
    let v = query(&[
        "--time-zone",
        "Europe/Lisbon",
        "what did the vet say last week",
    ]);
    assert_eq!(v["time_window"]["phrase"], "last week", "{v}");
    assert_eq!(v["time_window"]["time_zone"], "Europe/Lisbon", "{v}");
    assert_eq!(v["time_window"]["start_ms"], 1_772_409_600_000i64, "{v}");
    assert!(v["time_window"]["use"].is_string(), "{v}");
    let v = query(&["--no-time-windows", "what did the vet say last week"]);
    assert!(v.get("time_window").is_none(), "{v}");
    // A zone that does not exist is a usage error.
    let out = run(voicerag(&data).args(["query", "--time-zone", "Mars/Olympus", "vet"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Mars/Olympus"), "{}", stderr(&out));
}
