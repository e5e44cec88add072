//! Loading ONNX Runtime (once per process) and building sessions with the configured threads and
//! execution providers.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::AsPointer;
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::SessionBuilder;

use super::RuntimeConfig;
use super::error::ModelError;

/// The loaded ONNX Runtime: one per process, because the dynamic library can be loaded only once.
pub struct OrtRuntime {
    env: Environment,
    library: PathBuf,
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Resolves a path from the config: absolute as is; relative against the current directory, then
/// against the crate root, so tests and `cargo run` find `runtime/` and `models/` from anywhere.
/// Returns the first candidate that exists, or `Err` with the candidates tried.
pub fn resolve_path(path: &str) -> Result<PathBuf, (PathBuf, Option<PathBuf>)> {
    let p = Path::new(path);
    if p.is_absolute() {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err((p.to_path_buf(), None))
        };
    }
    let in_cwd = std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf());
    if in_cwd.exists() {
        return Ok(in_cwd);
    }
    let in_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    if in_crate.exists() {
        return Ok(in_crate);
    }
    Err((in_cwd, Some(in_crate)))
}

/// Where the runtime library would be loaded from, or the "run `make setup`" error if it is missing.
/// Checked before anything touches ort, so the error is the same whether or not ort is loaded.
pub fn resolve_library(config: &RuntimeConfig) -> Result<PathBuf, ModelError> {
    resolve_path(&config.library)
        .map_err(|(path, also_tried)| ModelError::RuntimeMissing { path, also_tried })
}

/// Returns the process's ONNX Runtime, loading it from `config.library` on first use.
pub fn runtime(config: &RuntimeConfig) -> Result<&'static OrtRuntime, ModelError> {
    let library = resolve_library(config)?;
    if let Some(rt) = RUNTIME.get() {
        return rt.same_library(&library).map(|()| rt);
    }
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return rt.same_library(&library).map(|()| rt);
    }
    let load_err = |message: String| ModelError::RuntimeLoad {
        path: library.clone(),
        message,
    };
    let env = ort::init_from(&library)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("voicerag")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let canonical = library.canonicalize().unwrap_or_else(|_| library.clone());
    tracing::info!(library = %canonical.display(), "ONNX Runtime loaded");
    // Set under the init lock, so this cannot lose a race.
    let _ = RUNTIME.set(OrtRuntime {
        env,
        library: canonical,
    });
    RUNTIME
        .get()
        .ok_or_else(|| load_err("runtime initialisation did not stick".into()))
}

impl OrtRuntime {
    /// The library this process loaded.
    pub fn library(&self) -> &Path {
        &self.library
    }

    fn same_library(&self, requested: &Path) -> Result<(), ModelError> {
        let requested = requested
            .canonicalize()
            .unwrap_or_else(|_| requested.to_path_buf());
        if requested == self.library {
            Ok(())
        } else {
            Err(ModelError::RuntimeConflict {
                loaded: self.library.clone(),
                requested,
            })
        }
    }

    /// Execution providers compiled into the loaded runtime, e.g. `["CPUExecutionProvider"]`.
    pub fn available_providers(&self) -> Result<Vec<String>, ModelError> {
        let api = ort::api();
        let mut list: *mut *mut c_char = std::ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: the runtime is loaded (self exists); the out-pointers are valid locals.
        unsafe {
            ort::Error::result_from_status((api.GetAvailableProviders)(&mut list, &mut count))
        }
        .map_err(|e| self.load_error(e.to_string()))?;
        if list.is_null() {
            return Ok(Vec::new());
        }
        let names = (0..count.max(0) as usize)
            // SAFETY: ONNX Runtime returned `count` valid NUL-terminated strings at `list`.
            .map(|i| {
                unsafe { CStr::from_ptr(*list.add(i)) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // SAFETY: releases exactly what GetAvailableProviders allocated.
        let _ =
            unsafe { ort::Error::result_from_status((api.ReleaseAvailableProviders)(list, count)) };
        Ok(names)
    }

    fn load_error(&self, message: String) -> ModelError {
        ModelError::RuntimeLoad {
            path: self.library.clone(),
            message,
        }
    }

    /// Builds a session for `model` with the configured threads and execution providers.
    pub fn session(&self, model: &Path, config: &RuntimeConfig) -> Result<Session, ModelError> {
        let err = |message: String| ModelError::Session {
            path: model.to_path_buf(),
            message,
        };
        let mut builder = Session::builder(&self.env).map_err(|e| err(e.to_string()))?;
        for name in self.providers_to_register(config)? {
            if let Err(message) = append_provider(&mut builder, &name) {
                if !config.allow_cpu_fallback {
                    return Err(ModelError::ProviderFailed { name, message });
                }
                tracing::warn!(provider = %name, %message, "execution provider failed; falling back to CPU");
            }
        }
        if !config.cpu_arena {
            disable_cpu_arena(&mut builder).map_err(err)?;
        }
        builder
            // ort's tracing bridge opens the environment at verbose; per-run verbose logging costs time.
            .with_log_level(LogLevel::Warning)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(config.threads)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?
            .commit_from_file(model)
            .map_err(|e| err(e.to_string()))
    }

    /// Maps the configured provider names onto the runtime's, dropping CPU (always there, always
    /// last). A missing one is an error, or a logged fallback when `allow_cpu_fallback` is set.
    fn providers_to_register(&self, config: &RuntimeConfig) -> Result<Vec<String>, ModelError> {
        let wanted: Vec<&String> = config
            .execution_providers
            .iter()
            .filter(|n| provider_key(n) != "cpu")
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let available = self.available_providers()?;
        let mut chosen = Vec::new();
        for name in wanted {
            match available
                .iter()
                .find(|a| provider_key(a) == provider_key(name))
            {
                Some(found) => chosen.push(found.clone()),
                None if config.allow_cpu_fallback => {
                    tracing::warn!(provider = %name, available = ?available,
                        "execution provider not in the loaded ONNX Runtime; falling back to CPU");
                }
                None => {
                    return Err(ModelError::ProviderUnavailable {
                        name: name.clone(),
                        available: available.join(", "),
                    });
                }
            }
        }
        Ok(chosen)
    }
}

/// "CUDA", "cuda" and "CUDAExecutionProvider" all name the same provider.
fn provider_key(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let key = lower.strip_suffix("executionprovider").unwrap_or(&lower);
    match key {
        "onednn" => "dnnl".to_string(),
        other => other.to_string(),
    }
}

/// Registers a provider by its runtime name through ONNX Runtime's generic API, so any provider the
/// loaded runtime has can be named from config without an ort cargo feature per provider.
fn append_provider(builder: &mut SessionBuilder, name: &str) -> Result<(), String> {
    let c_name = CString::new(name).map_err(|e| e.to_string())?;
    let api = ort::api();
    // SAFETY: the builder's options pointer is valid for its lifetime; no option keys are passed.
    unsafe {
        ort::Error::result_from_status((api.SessionOptionsAppendExecutionProvider)(
            builder.ptr_mut(),
            c_name.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            0,
        ))
    }
    .map_err(|e| e.to_string())
}

fn disable_cpu_arena(builder: &mut SessionBuilder) -> Result<(), String> {
    let api = ort::api();
    // SAFETY: the builder's options pointer is valid for its lifetime.
    unsafe { ort::Error::result_from_status((api.DisableCpuMemArena)(builder.ptr_mut())) }
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_match_loosely() {
        assert_eq!(provider_key("CPUExecutionProvider"), "cpu");
        assert_eq!(provider_key("cpu"), "cpu");
        assert_eq!(
            provider_key("XnnpackExecutionProvider"),
            provider_key("xnnpack")
        );
        assert_eq!(
            provider_key("oneDNN"),
            provider_key("DnnlExecutionProvider")
        );
        assert_ne!(provider_key("cuda"), provider_key("rocm"));
    }

    #[test]
    fn missing_library_names_path_and_fix() {
        let config = RuntimeConfig {
            library: "/nonexistent/dir/libonnxruntime.so".into(),
            ..Default::default()
        };
        let err = runtime(&config)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/dir/libonnxruntime.so"), "{err}");
        assert!(err.contains("make setup"), "{err}");
    }

    #[test]
    fn relative_paths_fall_back_to_the_crate_root() {
        let found = resolve_path("Cargo.toml").expect("crate root has Cargo.toml");
        assert!(found.ends_with("Cargo.toml"));
        let (first, also) = resolve_path("no/such/file.so").expect_err("missing");
        assert!(first.ends_with("no/such/file.so"));
        assert!(also.is_some_and(|p| p.starts_with(env!("CARGO_MANIFEST_DIR"))));
    }
}
