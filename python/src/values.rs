//! Python values in and out: transcripts from dicts, configuration overrides from keyword
//! arguments, JSON values as Python objects.

use std::time::Instant;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString};

use voicerag::actors::Transcript;

/// A JSON value as the equivalent Python object (dict, list, str, int, float, bool, None).
pub fn json_to_python(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any().unbind(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any().unbind(),
            _ => n
                .as_f64()
                .unwrap_or(f64::NAN)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
        },
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_python(py, item)?)?;
            }
            list.into_any().unbind()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_python(py, item)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// A required string field of a transcript mapping.
fn required_str(t: &Bound<'_, PyMapping>, field: &str) -> PyResult<String> {
    let value = t
        .get_item(field)
        .map_err(|_| PyValueError::new_err(format!("transcript: missing field {field:?}")))?;
    string_field(&value, field)
}

fn string_field(value: &Bound<'_, PyAny>, field: &str) -> PyResult<String> {
    value.extract::<String>().map_err(|_| {
        PyTypeError::new_err(format!(
            "transcript: field {field:?} must be str, not {}",
            type_name(value)
        ))
    })
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A transcript from a mapping with `namespace`, `conversation`, `utterance`, `text` (str),
/// optional `speaker` (str, default "user") and `is_final` (bool, default False). Received now.
pub fn transcript_from(value: &Bound<'_, PyAny>) -> PyResult<Transcript> {
    let t = value.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "transcript must be a mapping (dict) with namespace, conversation, utterance, text and \
             is_final, not {}",
            type_name(value)
        ))
    })?;
    let speaker = match t.get_item("speaker") {
        Ok(v) if !v.is_none() => string_field(&v, "speaker")?,
        _ => "user".to_string(),
    };
    let is_final = match t.get_item("is_final") {
        Ok(v) if !v.is_none() => {
            if !v.is_instance_of::<PyBool>() {
                return Err(PyTypeError::new_err(format!(
                    "transcript: field \"is_final\" must be bool, not {}",
                    type_name(&v)
                )));
            }
            v.is_truthy()?
        }
        _ => false,
    };
    Ok(Transcript {
        namespace: required_str(t, "namespace")?,
        conversation: required_str(t, "conversation")?,
        utterance: required_str(t, "utterance")?,
        speaker,
        text: required_str(t, "text")?,
        is_final,
        received_at: Instant::now(),
    })
}

/// Keyword overrides (`pipeline__budget_ms=80`) as the environment variables the configuration
/// reads (`VOICERAG_PIPELINE__BUDGET_MS=80`): the same parser, applied after the real environment,
/// so an override wins over the environment, which wins over the file.
pub fn overrides_as_env(overrides: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<(String, String)>> {
    let mut env = Vec::new();
    let Some(overrides) = overrides else {
        return Ok(env);
    };
    for (key, value) in overrides.iter() {
        let key: String = key.extract()?;
        if !key.contains("__") || key.starts_with('_') || key.ends_with('_') {
            return Err(PyTypeError::new_err(format!(
                "override {key:?}: expected SECTION__KEY, e.g. pipeline__budget_ms=80 or \
                 store__data_dir=\"/tmp/memories\""
            )));
        }
        let text = if value.is_instance_of::<PyBool>() {
            if value.is_truthy()? { "true" } else { "false" }.to_string()
        } else if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
            value.str()?.to_string()
        } else if let Ok(s) = value.extract::<String>() {
            s
        } else if let Ok(path) = value.extract::<std::path::PathBuf>() {
            path.to_string_lossy().into_owned()
        } else {
            return Err(PyTypeError::new_err(format!(
                "override {key:?}: expected str, int, float, bool or a path, not {}",
                type_name(&value)
            )));
        };
        env.push((format!("VOICERAG_{}", key.to_ascii_uppercase()), text));
    }
    Ok(env)
}
