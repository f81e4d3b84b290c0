//! Why a rack config could not be loaded. Every error names the file; parse and validation
//! errors also name the line (and column when known) and the key.

use std::path::PathBuf;

/// Why a rack config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The text is not valid YAML, or does not fit the schema (unknown key, wrong type,
    /// missing key, unknown `$VARIABLE`). `line` and `column` are 1-based and refer to the
    /// file as written, before variable substitution; `key_path` is the key the error is
    /// about, when it can be told.
    #[error(
        "{origin}{}: {}{message}",
        location_suffix(*.line, *.column),
        key_prefix(.key_path.as_deref())
    )]
    Parse {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        key_path: Option<String>,
        message: String,
    },

    /// The config parses but breaks a rule (duplicate name, unknown node, negative memory,
    /// ...). `key_path` is always set, e.g. `healthcheck.system_services[2].memory`.
    #[error("{origin}{}: {key_path}: {message}", location_suffix(*.line, None))]
    Invalid {
        origin: String,
        key_path: String,
        message: String,
        line: Option<usize>,
    },
}

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

fn key_prefix(key_path: Option<&str>) -> String {
    key_path.map(|k| format!("{k}: ")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let err = ConfigError::Parse {
            origin: "rack.yaml".into(),
            line: Some(12),
            column: Some(5),
            key_path: Some("healthcheck.system_services[0].memroy".into()),
            message: "unknown field `memroy`".into(),
        };
        assert_eq!(
            err.to_string(),
            "rack.yaml:12:5: healthcheck.system_services[0].memroy: unknown field `memroy`"
        );
        let err = ConfigError::Invalid {
            origin: "rack.yaml".into(),
            key_path: "nodes[2].ip".into(),
            message: "duplicate".into(),
            line: None,
        };
        assert_eq!(err.to_string(), "rack.yaml: nodes[2].ip: duplicate");
    }
}
