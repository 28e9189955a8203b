//! Durations as people write them in the configuration, policy files and
//! command-line flags: "90s", "5m", "1h". A leaf module, so that `config` and
//! `policy` can both read durations without depending on each other.

use std::time::Duration;

/// A duration that did not parse; names the field it was read from.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {text:?} is not a duration like \"90s\", \"5m\" or \"1h\" ({cause})")]
pub(crate) struct DurationError {
    pub(crate) field: String,
    text: String,
    cause: humantime::DurationError,
}

impl DurationError {
    /// What is wrong, without the field name (for errors that name it apart).
    pub(crate) fn reason(&self) -> String {
        format!(
            "{:?} is not a duration like \"90s\", \"5m\" or \"1h\" ({})",
            self.text, self.cause
        )
    }
}

pub(crate) fn parse_duration(field: &str, text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|cause| DurationError {
        field: field.to_string(),
        text: text.to_string(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_human_durations_and_names_the_field_when_it_cannot() {
        assert_eq!(
            parse_duration("ttl", " 90s ").unwrap(),
            Duration::from_secs(90)
        );
        let error = parse_duration("roles.a.ttl", "soon").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(r#"roles.a.ttl: "soon" is not a duration like "90s", "5m" or "1h" ("#),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            format!("roles.a.ttl: {}", error.reason())
        );
    }
}
