//! Run-time parameters as a server reports them with ParameterStatus, kept in a small vector: there are about a
//! dozen, so a linear scan beats hashing, and names compare case-insensitively as PostgreSQL's GUC names do.

/// The parameters a client may set that Ocelot carries from server to server in transaction mode.
pub(crate) const TRACKED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "standard_conforming_strings",
    "TimeZone",
];

/// Parameters PostgreSQL 15 reports with ParameterStatus (GUC_REPORT), which the tests check [`TRACKED`] against.
#[cfg(test)]
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// Whether the server reports `name` with ParameterStatus.
#[cfg(test)]
fn is_reported(name: &str) -> bool {
    REPORTED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Whether `name` is one of [`TRACKED`].
pub fn is_tracked(name: &str) -> bool {
    TRACKED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// A set of (name, value) pairs with case-insensitive names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerParams(Vec<(String, String)>);

impl ServerParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name`; returns whether the value changed.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match self
            .0
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some((_, v)) if v == value => false,
            Some((_, v)) => {
                *v = value.to_owned();
                true
            }
            None => {
                self.0.push((name.to_owned(), value.to_owned()));
                true
            }
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        let mut p = ServerParams::default();
        assert!(p.set("DateStyle", "ISO, MDY"));
        assert_eq!(p.get("datestyle"), Some("ISO, MDY"));
        assert!(!p.set("DATESTYLE", "ISO, MDY"));
        assert!(p.set("datestyle", "German"));
        assert_eq!(p.iter().count(), 1);
        assert!(is_reported("timezone") && is_tracked("TIMEZONE") && !is_reported("work_mem"));
    }
}
