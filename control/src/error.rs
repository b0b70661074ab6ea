//! Configuration errors as the operator sees them.
//!
//! A config file is usually fixed in one sitting, so loaders report every
//! problem they can find rather than the first one: `ConfigErrors` is a
//! non-empty list, displayed one `source: path: message` line per error.

use std::fmt;

/// One problem in a configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the configuration came from (a file name, or e.g. `xds`).
    pub source: String,
    /// Proto field path of the offending value, e.g.
    /// `static_resources.clusters[1].circuit_breakers`; empty when the error
    /// is about the document as a whole (e.g. a syntax error).
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(source: impl Into<String>, path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { source: source.into(), path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.source.is_empty(), self.path.is_empty()) {
            (false, false) => write!(f, "{}: {}: {}", self.source, self.path, self.message),
            (false, true) => write!(f, "{}: {}", self.source, self.message),
            (true, false) => write!(f, "{}: {}", self.path, self.message),
            (true, true) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A non-empty list of configuration errors.
///
/// Non-emptiness is an invariant (there is no way to build an empty one), so
/// `Result<_, ConfigErrors>` never carries an "error" with nothing in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub fn new(first: ConfigError) -> Self {
        ConfigErrors(vec![first])
    }

    /// `None` when `errors` is empty, i.e. when there is nothing to report.
    pub fn from_vec(errors: Vec<ConfigError>) -> Option<Self> {
        if errors.is_empty() {
            None
        } else {
            Some(ConfigErrors(errors))
        }
    }

    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; present because clippy expects it next to `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors::new(e)
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_per_error() {
        let mut errs = ConfigErrors::new(ConfigError::new("a.yaml", "x.y", "bad"));
        errs.push(ConfigError::new("a.yaml", "", "worse"));
        assert_eq!(errs.to_string(), "a.yaml: x.y: bad\na.yaml: worse");
        assert_eq!(errs.len(), 2);
        assert!(ConfigErrors::from_vec(vec![]).is_none());
    }
}
