//! Issue 14's capabilities on the conversational set (`fixtures/eval/conversational`, built by
//! `tools/make_conversational_set.py`: three users, six weeks, three time zones), with the real
//! int8 MiniLM, each group held against its own run with the capability off:
//! - time: questions naming a topic that came up on several days, and the time that says which
//!   day ("what did I have for dinner yesterday?"), recall their memory in the top 3 at least
//!   twice as often with time windows as without (issue 14's target);
//! - time_mentioned: questions naming a time whose other words mostly find the memory anyway;
//! - changed: a replaced or expired fact never ranks above its replacement (and does when
//!   `--include-superseded` brings the replaced ones back: the check can fail);
//! - misheard: names as a recogniser hears them, beside another person's memory on the same
//!   topic; held against the phonetic capability off (third ranking and sound-alike words):
//!   it must recall the misheard person's memory first clearly more often, and cost the other
//!   groups nothing.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn eval(flags: &[&str]) -> Option<serde_json::Value> {
    // Sound-alike words are off by default (see config.toml); this set measures them on.
    eval_with(flags, &[("VOICERAG_RETRIEVAL__SOUND_ALIKE_WORDS", "true")])
}

fn eval_with(flags: &[&str], env: &[(&str, &str)]) -> Option<serde_json::Value> {
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
        .envs(env.iter().copied())
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

    // Time-dependent questions (26): dinner, lunch, the pool, yoga or calls with mum on the day
    // the question names. Measured: recall@3 0.962 on vs 0.346 off, recall@1 0.808 vs 0.077. The
    // target: at least twice the recall@3.
    let (t_on, t_off) = (group(&on, "time"), group(&no_time, "time"));
    assert_eq!(t_on["queries"], 26);
    assert!(
        f(t_on, "recall@3") >= 2.0 * f(t_off, "recall@3"),
        "time recall@3 {} on vs {} off",
        f(t_on, "recall@3"),
        f(t_off, "recall@3")
    );
    assert!(
        f(t_on, "recall@1") >= 2.0 * f(t_off, "recall@1"),
        "time recall@1 {} on vs {} off",
        f(t_on, "recall@1"),
        f(t_off, "recall@1")
    );
    // Measured minus two questions of 26.
    assert!(
        f(t_on, "recall@3") >= 0.962 - 0.08,
        "time recall@3 {}",
        f(t_on, "recall@3")
    );

    // Time mentioned, topic enough (25): measured recall@1 0.88 on vs 0.22 off, recall@3 1.00
    // vs 0.66: the window still puts the day's memory first, and the top 3 already held it
    // two times in three without it.
    let (m_on, m_off) = (
        group(&on, "time_mentioned"),
        group(&no_time, "time_mentioned"),
    );
    assert_eq!(m_on["queries"], 25);
    assert!(
        f(m_on, "recall@1") >= 2.0 * f(m_off, "recall@1"),
        "time_mentioned recall@1 {} on vs {} off",
        f(m_on, "recall@1"),
        f(m_off, "recall@1")
    );
    assert!(
        f(m_on, "recall@3") >= 1.0 - 0.08,
        "time_mentioned recall@3 {}",
        f(m_on, "recall@3")
    );
    assert!(
        f(m_on, "recall@3") >= f(m_off, "recall@3") + 0.2,
        "time_mentioned recall@3 {} on vs {} off",
        f(m_on, "recall@3"),
        f(m_off, "recall@3")
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

    // Misheard names (11 questions), each beside another person's memory on its topic.
    // Measured: recall@1 0.955, recall@3 0.955, MRR@10 1.0 with the phonetic capability (the
    // third ranking and sound-alike words); 0.591 / 0.955 / 0.818 without either (the namesake's
    // memory on the same topic wins by meaning). Siobhan/Shivon and Niamh/Neve are Irish
    // spellings Double Metaphone does not match.
    let misheard = group(&on, "misheard");
    assert!(f(misheard, "recall@1") >= 0.955 - 0.1, "{misheard}");
    assert!(f(misheard, "recall@3") >= 0.955 - 0.1, "{misheard}");
    assert!(f(misheard, "mrr@10") >= 1.0 - 0.08, "{misheard}");
    let Some(no_phonetic) = eval_with(
        &[],
        &[
            ("VOICERAG_RETRIEVAL__PHONETIC_WEIGHT", "0"),
            ("VOICERAG_RETRIEVAL__SOUND_ALIKE_WORDS", "false"),
        ],
    ) else {
        return;
    };
    let unheard = group(&no_phonetic, "misheard");
    assert!(
        f(misheard, "recall@1") >= f(unheard, "recall@1") + 0.25,
        "misheard recall@1: {misheard} with the phonetic capability, {unheard} without"
    );
    for key in ["recall@3", "mrr@10"] {
        assert!(
            f(misheard, key) >= f(unheard, key) - 1e-9,
            "misheard {key}: {misheard} with the phonetic capability, {unheard} without"
        );
    }
    // Questions whose words the memories have: the capability costs them nothing.
    for name in ["time", "time_mentioned", "changed"] {
        let (with, without) = (group(&on, name), group(&no_phonetic, name));
        for key in ["recall@1", "recall@3", "mrr@10"] {
            assert!(
                f(with, key) >= f(without, key) - 1e-9,
                "{name} {key}: {with} with the phonetic capability, {without} without"
            );
        }
    }
}
