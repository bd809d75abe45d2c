//! Method parameters: one syntax everywhere (`name:key=value,...`), parsed once into typed values, with every
//! default stated in exactly one place (the method's `PARAMS` table).

use crate::error::{PruneError, Result};
use std::collections::BTreeMap;
use std::str::FromStr;

/// One documented parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Key as written on the command line.
    pub name: &'static str,
    /// Default value, as text.
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// A method's parameters: the defaults overridden by what the user gave.
#[derive(Debug, Clone)]
pub struct Params {
    method: String,
    values: BTreeMap<String, String>,
}

impl Params {
    /// Merges `given` over the defaults of `specs`; an unknown key is an error naming the known ones.
    pub fn new(method: &str, specs: &[ParamSpec], given: &[(String, String)]) -> Result<Self> {
        let mut values: BTreeMap<String, String> =
            specs.iter().map(|s| (s.name.to_string(), s.default.to_string())).collect();
        for (key, value) in given {
            if !values.contains_key(key) {
                let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
                return Err(PruneError::Param {
                    method: method.to_string(),
                    param: key.clone(),
                    reason: format!(
                        "is unknown (known: {})",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                });
            }
            values.insert(key.clone(), value.clone());
        }
        Ok(Params { method: method.to_string(), values })
    }

    fn error(&self, key: &str, reason: String) -> PruneError {
        PruneError::Param { method: self.method.clone(), param: key.to_string(), reason }
    }

    /// The raw text of a parameter.
    pub fn text(&self, key: &str) -> Result<&str> {
        self.values.get(key).map(String::as_str).ok_or_else(|| self.error(key, "is not defined".into()))
    }

    /// A parameter parsed as `T`.
    pub fn get<T: FromStr>(&self, key: &str) -> Result<T> {
        let text = self.text(key)?;
        text.parse().map_err(|_| self.error(key, format!("= `{text}` is not a valid {}", std::any::type_name::<T>())))
    }

    /// A float parameter that must lie in `[lo, hi]`.
    pub fn float_in(&self, key: &str, lo: f64, hi: f64) -> Result<f64> {
        let v: f64 = self.get(key)?;
        if !(lo..=hi).contains(&v) {
            return Err(self.error(key, format!("= {v} is outside [{lo}, {hi}]")));
        }
        Ok(v)
    }

    /// An integer parameter that must be at least `lo`.
    pub fn int_at_least(&self, key: &str, lo: usize) -> Result<usize> {
        let v: usize = self.get(key)?;
        if v < lo {
            return Err(self.error(key, format!("= {v} must be at least {lo}")));
        }
        Ok(v)
    }

    /// One of a fixed set of words.
    pub fn choice<'a>(&self, key: &str, options: &[&'a str]) -> Result<&'a str> {
        let text = self.text(key)?;
        options
            .iter()
            .find(|o| **o == text)
            .copied()
            .ok_or_else(|| self.error(key, format!("= `{text}` is not one of {}", options.join(" | "))))
    }

    /// The effective values (defaults included), for result records.
    pub fn effective(&self) -> &BTreeMap<String, String> {
        &self.values
    }
}

/// Splits `name:key=value,key=value` into the name and its pairs.
pub fn parse_spec(spec: &str) -> Result<(String, Vec<(String, String)>)> {
    let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let mut pairs = Vec::new();
    for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| PruneError::Param {
            method: name.to_string(),
            param: item.to_string(),
            reason: "must be written key=value".into(),
        })?;
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((name.trim().to_string(), pairs))
}
