//! The names a client gives the server: tenants, users, threads, agents and breakers.
//!
//! They become parts of keys — a named breaker is held as `TENANT/NAME`, a user's live channel
//! is keyed by tenant and user, metrics carry them as label values — and they are shown on the
//! dashboard. So the server (not the core: the Python drop-in keeps the original's "any string")
//! accepts only names that cannot run into each other or hide: 1 to [`MAX_NAME_CHARS`] characters of
//! printable characters, without leading or trailing white space, and for tenants and breakers
//! without `/`, the separator of breaker keys. The composite keys are also built so that no name
//! can reach into another's part ([`crate::auth::Scope::breaker_key`], the hub's user key), which
//! covers names stored before these rules.

/// The longest name, in characters (as JSON Schema's `maxLength` counts them).
pub const MAX_NAME_CHARS: usize = 256;

/// What a name names; each kind has its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A tenant: also without `/`.
    Tenant,
    /// A user id.
    User,
    /// A thread id.
    Thread,
    /// An agent name.
    Agent,
    /// A named breaker: also without `/`.
    Breaker,
}

impl NameKind {
    /// Whether `/` is refused (the separator of `TENANT/NAME` breaker keys).
    fn refuses_slash(self) -> bool {
        matches!(self, Self::Tenant | Self::Breaker)
    }

    /// The rule, as a refusal states it.
    pub fn rule(self) -> &'static str {
        if self.refuses_slash() {
            "1 to 256 characters of printable characters, without '/' and without leading or trailing white space"
        } else {
            "1 to 256 characters of printable characters, without leading or trailing white space"
        }
    }
}

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; valid: {rule}")]
pub struct NameError {
    /// What is wrong with it.
    pub problem: String,
    /// What would be valid ([`NameKind::rule`]).
    pub rule: &'static str,
}

/// Characters that print nothing yet change what is shown: zero-width characters, direction
/// overrides and isolates, the word joiner family, the byte-order mark and the soft hyphen. With
/// the control characters (`char::is_control`) they make names that look alike but differ.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks `name` as a `kind`.
///
/// # Errors
///
/// The first rule it breaks, and the rule for a valid one.
pub fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    let refuse = |problem: String| {
        Err(NameError {
            problem,
            rule: kind.rule(),
        })
    };
    if name.is_empty() {
        return refuse("it is empty".into());
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return refuse(format!("it is {chars} characters long"));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || is_invisible(*c)) {
        return refuse(format!(
            "it contains the non-printable character U+{:04X}",
            u32::from(c)
        ));
    }
    if name.trim() != name {
        return refuse("it starts or ends with white space".into());
    }
    if kind.refuses_slash() && name.contains('/') {
        return refuse("it contains '/'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_collide_or_hide_are_refused() {
        for (kind, name) in [
            (NameKind::Tenant, "acme/eu"),
            (NameKind::Breaker, "openai/gpt"),
            (NameKind::User, "alice\nbob"),
            (NameKind::Thread, "t\u{0}"),
            (NameKind::Agent, "a\u{202E}b"),
            (NameKind::User, " alice"),
            (NameKind::User, ""),
        ] {
            assert!(check(kind, name).is_err(), "{kind:?} {name:?}");
        }
        assert!(check(NameKind::User, &"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        for (kind, name) in [
            (NameKind::Tenant, "acme-eu.prod_1"),
            (NameKind::User, "alice@example.com"),
            (NameKind::Thread, "thread/42"),
            (NameKind::Agent, "planner agent ü 日本"),
            (NameKind::Breaker, "openai:gpt-4o"),
        ] {
            assert_eq!(check(kind, name), Ok(()), "{kind:?} {name:?}");
        }
        assert_eq!(check(NameKind::User, &"é".repeat(MAX_NAME_CHARS)), Ok(()));
    }
}
