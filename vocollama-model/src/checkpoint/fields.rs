//! A config.json object read field by field: HF's defaults where a field is
//! missing, and an error naming the file, the field, what was expected and
//! what was found where one is wrong.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A JSON object with its file (and its dotted place in it, e.g. `text_config`).
pub(crate) struct Fields<'a> {
    pub path: &'a Path,
    prefix: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(path: &'a Path, prefix: &'a str, value: &'a Value) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| Error::config(path, format!("`{prefix}` is not a JSON object")))?;
        Ok(Self { path, prefix, map })
    }

    /// The field's name as the error messages say it.
    pub fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_string() } else { format!("{}.{key}", self.prefix) }
    }

    /// An error about `key` of this file.
    pub fn error(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::config(self.path, format!("field `{}`: {msg}", self.name(key)))
    }

    fn err(&self, key: &str, expected: &str, found: &Value) -> Error {
        self.error(key, format!("expected {expected}, found {found}"))
    }

    /// The value of `key`; `null` counts as missing.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0 || key.ends_with("token_id"))
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, "a positive integer", v)),
        }
    }

    /// A positive integer no larger than `max`: sizes that allocate are checked before
    /// anything is sized by them (a typo or a hostile file must not ask for terabytes).
    pub fn usize_upto(&self, key: &str, default: usize, max: usize) -> Result<usize> {
        let n = self.usize_or(key, default)?;
        if n == 0 || n > max {
            return Err(self.error(key, format!("expected 1 to {max}, found {n}")));
        }
        Ok(n)
    }

    /// A finite number above zero (an epsilon, a RoPE base).
    pub fn positive_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        let x = self.f64_or(key, default)?;
        if !(x > 0.0 && x.is_finite()) {
            return Err(self.error(key, format!("expected a positive number, found {x}")));
        }
        Ok(x)
    }

    pub fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| self.err(key, "an integer", v)),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, "a number", v)),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, "true or false", v)),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.err(key, "a string", v)),
        }
    }

    /// One of a fixed set of strings, as the value it names; `default` when
    /// the field is missing. `hint` ends the error message when given.
    pub fn choice<T: Copy>(&self, key: &str, default: &str, options: &[(&str, T)], hint: &str) -> Result<T> {
        let found = self.opt_str(key)?.unwrap_or(default);
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == found) {
            return Ok(*value);
        }
        let names: Vec<String> = options.iter().map(|(name, _)| format!("\"{name}\"")).collect();
        let expected = match names.as_slice() {
            [one] => one.clone(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
            [] => "nothing".into(),
        };
        Err(self.error(key, format!("expected {expected}, found \"{found}\"{hint}")))
    }

    /// A token id that may be written as a list (HF allows `eos_token_id: [2, 32000]`).
    pub fn token_id(&self, key: &str, default: Option<u32>) -> Result<Option<u32>> {
        let value = match self.get(key) {
            None => return Ok(default),
            Some(Value::Array(a)) if !a.is_empty() => &a[0],
            Some(v) => v,
        };
        value.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| self.err(key, "a token id", value))
    }
}
