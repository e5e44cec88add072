//! Issue 14's capabilities on the conversational set (`fixtures/eval/conversational`, built by
//! `tools/make_conversational_set.py`: three users, six weeks, three time zones), with the real
//! int8 MiniLM, each group held against its own run with the capability off:
//! - time: questions naming a time recall their memory far more often with time windows;
//! - changed: a replaced or expired fact never ranks above its replacement (and does when
//!   `--include-superseded` brings the replaced ones back: the check can fail);
//! - misheard: names as a recogniser hears them; held loosely (the set does not separate the
//!   phonetic ranking: it scores the same with it off).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn eval(flags: &[&str]) -> Option<serde_json::Value> {
    let model = root().join("models/all-MiniLM-L6-v2/model.onnx");
    if !model.exists() {
        assert!(
            std::env::var("VOICERAG_REQUIRE_MODELS").as_deref() != Ok("1"),
            "{} is missing: run `make setup`",
            model.display()
        );
        eprintln!("SKIPPED: {} is missing (run `make setup`)", model.display());
        return None;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_voicerag"))
        .current_dir(root())
        // Quality, not latency: a debug build must not run out of budget.
        .env("VOICERAG_PIPELINE__BUDGET_MS", "10000")
        .arg("--config")
        .arg(root().join("config.toml"))
        .args(["eval", "--json", "--top-k", "10"])
        .args(flags)
        .arg(root().join("fixtures/eval/conversational"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn group<'a>(m: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &m["groups"][name]
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn conversational_set_holds_each_capability_against_its_absence() {
    let Some(on) = eval(&[]) else { return };
    let Some(no_time) = eval(&["--no-time-windows"]) else {
        return;
    };
    let Some(stale_back) = eval(&["--include-superseded"]) else {
        return;
    };
    eprintln!(
        "with everything: {on}\ntime windows off: {no_time}\nsuperseded included: {stale_back}"
    );

    // Time (25 questions). Measured: recall@1 0.80 on vs 0.30 off, recall@3 1.00 vs 0.66.
    let (t_on, t_off) = (group(&on, "time"), group(&no_time, "time"));
    assert_eq!(t_on["queries"], 25);
    assert!(
        f(t_on, "recall@1") >= 2.0 * f(t_off, "recall@1"),
        "time recall@1 {} on vs {} off",
        f(t_on, "recall@1"),
        f(t_off, "recall@1")
    );
    // Top 3 of five or so memories on a topic already holds the right one often without a
    // window: the gain there is smaller than twofold (see the README), held with a margin of
    // two questions.
    assert!(
        f(t_on, "recall@3") >= 1.0 - 0.08,
        "time recall@3 {}",
        f(t_on, "recall@3")
    );
    assert!(
        f(t_on, "recall@3") >= f(t_off, "recall@3") + 0.2,
        "time recall@3 {} on vs {} off",
        f(t_on, "recall@3"),
        f(t_off, "recall@3")
    );

    // Facts that change (8 questions): the replacement always wins; without supersedes and
    // expiry (everything included) the replaced facts do outrank.
    let changed = group(&on, "changed");
    assert_eq!(changed["stale_outranks"], 0, "{changed}");
    assert_eq!(
        on["stale_outranks"], 0,
        "no group lets a replaced fact win: {on}"
    );
    assert!(f(changed, "recall@3") >= 1.0 - 1e-9, "{changed}");
    assert!(
        group(&stale_back, "changed")["stale_outranks"]
            .as_u64()
            .unwrap()
            >= 4,
        "{stale_back}"
    );

    // Misheard names (11 questions): measured recall@3 0.95 (recall@1 0.86) with the phonetic
    // ranking on and off alike: MiniLM and the other words of the question find these already.
    // A loose floor: the set does not separate the phonetic ranking (see the README).
    let misheard = group(&on, "misheard");
    assert!(f(misheard, "recall@3") >= 0.8, "{misheard}");
}
