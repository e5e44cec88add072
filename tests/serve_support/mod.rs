//! The real `voicerag serve` binary as a child process for the NATS process tests: the tiny
//! fixture embedder, a real store in the given data directory, short heartbeats and ack wait.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kills the process when the test ends, whatever happened.
pub struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    pub fn start(url: &str, data: &Path, replica: &str, partitions: &str) -> Self {
        Self::start_with(url, data, replica, partitions, &[])
    }

    pub fn start_with(
        url: &str,
        data: &Path,
        replica: &str,
        partitions: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_voicerag"))
            .arg("serve")
            .args(["--nats-url", url, "--data-dir"])
            .arg(data)
            .current_dir(data.parent().unwrap_or(data))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "VOICERAG_EMBEDDER__MODEL_DIR",
                root().join("fixtures/models/tiny-embedder"),
            )
            .env(
                "VOICERAG_RUNTIME__LIBRARY",
                root().join("runtime/libonnxruntime.so"),
            )
            .env("VOICERAG_STORE__MAP_SIZE_MIB", "64")
            .env("VOICERAG_PIPELINE__BUDGET_MS", "2000")
            .env("VOICERAG_NATS__REPLICA_ID", replica)
            .env("VOICERAG_NATS__PARTITIONS", partitions)
            .env("VOICERAG_NATS__HEARTBEAT_MS", "200")
            .env("VOICERAG_NATS__MEMORY_BATCH", "8")
            .env("VOICERAG_NATS__ACK_WAIT_MS", "2000")
            .env("VOICERAG_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("voicerag binary runs");
        Self(child)
    }

    pub fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    pub async fn sigterm_exits_0(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let until = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < until,
                "voicerag serve did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "voicerag serve exited with {status}");
    }
}
