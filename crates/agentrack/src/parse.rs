//! Parsing the domain enumerations from their value strings.
//!
//! Every enumeration crosses an edge (JSON, Python, the CLI) as its lower-case value string, the
//! same strings as the original. Anything else — an unknown name, or a JSON object where a state
//! belongs (the bug that broke the original) — is rejected with an error that lists what is valid.

use std::fmt;

/// A value that is not one of an enumeration's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{found} is not a valid {kind}; valid values: {}", .valid.join(", "))]
pub struct ParseEnumError {
    /// What was expected, e.g. "execution state".
    pub kind: &'static str,
    /// A description of what was given, e.g. `"finished"` or `a JSON object`.
    pub found: String,
    /// Every accepted value string.
    pub valid: &'static [&'static str],
}

impl ParseEnumError {
    pub(crate) fn new(kind: &'static str, found: impl fmt::Display, valid: &'static [&'static str]) -> Self {
        Self {
            kind,
            found: found.to_string(),
            valid,
        }
    }
}

/// Declares a fieldless enum with value strings, `as_str`, `ALL`, `Display`, `FromStr` and serde.
macro_rules! value_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident => $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every value string, in declaration order.
            pub const VALUES: &'static [&'static str] = &[$($value),+];

            /// The lower-case value string, as the original used it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::parse::ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($value => Ok($name::$variant),)+
                    _ => Err($crate::parse::ParseEnumError::new($kind, format_args!("{s:?}"), Self::VALUES)),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> ::serde::de::Visitor<'de> for Visitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        write!(f, "a {} string, one of: {}", $kind, $name::VALUES.join(", "))
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

pub(crate) use value_enum;
