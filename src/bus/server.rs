//! Starts a private `nats-server` with JetStream on a free loopback port: for tests, the NATS
//! benchmark and demos. Never for production, where the server is the deployment's.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BusError;

/// A `nats-server` child process, killed on drop.
pub struct LocalNatsServer {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    config_file: Option<PathBuf>,
}

impl LocalNatsServer {
    /// The binary: `$NATS_SERVER_BIN`, then `runtime/nats-server` in this source tree, then PATH.
    pub fn find_binary() -> Result<PathBuf, BusError> {
        if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
            return Ok(PathBuf::from(path));
        }
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/nats-server");
        if local.exists() {
            return Ok(local);
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                BusError::Server(
                    "no nats-server: set NATS_SERVER_BIN, run `make setup`, or install it on PATH"
                        .into(),
                )
            })
    }

    /// Starts a server with JetStream storing under `store_dir`.
    pub fn start(store_dir: &Path) -> Result<Self, BusError> {
        Self::start_with_config(store_dir, None)
    }

    /// Same, with extra server configuration (e.g. subject `mappings`) in nats-server syntax.
    pub fn start_with_config(store_dir: &Path, config: Option<&str>) -> Result<Self, BusError> {
        let binary = Self::find_binary()?;
        let port = free_port()?;
        let config_file = match config {
            Some(text) => {
                let path = store_dir.join("nats-server.conf");
                std::fs::write(&path, text)
                    .map_err(|e| BusError::Server(format!("write {}: {e}", path.display())))?;
                Some(path)
            }
            None => None,
        };
        let mut server = Self {
            child: None,
            binary,
            port,
            store_dir: store_dir.to_path_buf(),
            config_file,
        };
        server.spawn()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server dies without a goodbye, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and store (after [`LocalNatsServer::kill`]).
    pub fn restart(&mut self) -> Result<(), BusError> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> Result<(), BusError> {
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config_file {
            command.arg("-c").arg(config);
        }
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| BusError::Server(format!("cannot run {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(BusError::Server(format!("exited at start-up: {status}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BusError::Server(format!(
            "not listening on port {} after 10 s",
            self.port
        )))
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16, BusError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BusError::Server(format!("no free port: {e}")))
}
