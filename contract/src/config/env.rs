//! Reads a flat settings struct from `JETQ_*` variables, with errors that name the variable and
//! the form it accepts.
//!
//! This replaces `envy` for jetq's own settings: envy 0.4.2 names the variable only in its own
//! number and boolean parse errors (and then without the `JETQ_` prefix), while a value that a
//! field's deserializer refuses (every duration) came back as `invalid value: string "banana",
//! expected a duration` with no variable at all. Here every value carries its variable, so
//! every error can name it, and each primitive type says what it accepts. The mapping is
//! envy's: variables under the prefix, the rest of the name lower-cased is the field name,
//! unknown variables are ignored, `Option` fields are `Some` when the variable is set, sequences
//! split on `,`.

use std::fmt;

use serde::de::{self, value::MapDeserializer, IntoDeserializer, Visitor};

use super::ConfigError;

/// What went wrong while deserializing, before it is turned into a [`ConfigError`].
#[derive(Debug)]
pub(crate) enum EnvError {
    /// A required field had no variable (the field's name).
    Missing(String),
    /// A variable's value was refused; `problem` already says what is wrong and what is accepted.
    Value { variable: String, problem: String },
    /// A field deserializer's own message, not yet tied to a variable.
    Message(String),
    /// A visitor refused the value and said what it expected (e.g. `one of \`a\`, \`b\``).
    Expected(String),
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvError::Missing(field) => write!(f, "{field} is required"),
            EnvError::Value { variable, problem } => write!(f, "{variable}: {problem}"),
            EnvError::Message(message) => f.write_str(message),
            EnvError::Expected(expected) => write!(f, "expected {expected}"),
        }
    }
}

impl std::error::Error for EnvError {}

impl de::Error for EnvError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EnvError::Message(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        EnvError::Missing(field.to_owned())
    }

    fn invalid_type(_unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        EnvError::Expected(expected.to_string())
    }

    fn invalid_value(_unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        EnvError::Expected(expected.to_string())
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        let names: Vec<String> = expected.iter().map(|name| format!("{name:?}")).collect();
        EnvError::Expected(format!("one of {}", names.join(", ")))
    }
}

/// The longest part of a refused value an error repeats: enough to recognise it, never a whole
/// pasted file.
const SHOWN_VALUE_CHARS: usize = 64;

fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN_VALUE_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(SHOWN_VALUE_CHARS).collect();
        format!("{head:?}…")
    }
}

/// One variable's value, with the variable's name for the errors.
struct Value {
    variable: String,
    text: String,
}

impl Value {
    fn refused(&self, expected: &str) -> EnvError {
        EnvError::Value {
            variable: self.variable.clone(),
            problem: format!("{} is not {expected}", shown(&self.text)),
        }
    }

    /// Ties an error of a field's own deserializer to this variable.
    fn attribute(&self, err: EnvError) -> EnvError {
        match err {
            EnvError::Message(message) => EnvError::Value {
                variable: self.variable.clone(),
                problem: message,
            },
            EnvError::Expected(expected) => self.refused(&expected),
            other => other,
        }
    }
}

impl<'de> IntoDeserializer<'de, EnvError> for Value {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parsed {
    ($($method:ident $visit:ident $ty:ty => $expected:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, EnvError> {
                match self.text.trim().parse::<$ty>() {
                    Ok(value) => visitor.$visit(value).map_err(|err| self.attribute(err)),
                    Err(_) => Err(self.refused($expected)),
                }
            }
        )*
    };
}

const WHOLE_NUMBER: &str = "a whole number";
const NON_NEGATIVE: &str = "a whole number (0 or more)";

impl<'de> de::Deserializer<'de> for Value {
    type Error = EnvError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, EnvError> {
        let text = self.text.clone();
        visitor
            .visit_string(text)
            .map_err(|err| self.attribute(err))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, EnvError> {
        let text = self.text.trim();
        let value = if text.eq_ignore_ascii_case("true") {
            true
        } else if text.eq_ignore_ascii_case("false") {
            false
        } else {
            return Err(self.refused("true or false"));
        };
        visitor.visit_bool(value).map_err(|err| self.attribute(err))
    }

    parsed! {
        deserialize_u8 visit_u8 u8 => "a whole number from 0 to 255";
        deserialize_u16 visit_u16 u16 => "a whole number from 0 to 65535";
        deserialize_u32 visit_u32 u32 => "a whole number from 0 to 4294967295";
        deserialize_u64 visit_u64 u64 => NON_NEGATIVE;
        deserialize_i8 visit_i8 i8 => WHOLE_NUMBER;
        deserialize_i16 visit_i16 i16 => WHOLE_NUMBER;
        deserialize_i32 visit_i32 i32 => WHOLE_NUMBER;
        deserialize_i64 visit_i64 i64 => WHOLE_NUMBER;
        deserialize_f32 visit_f32 f32 => "a number";
        deserialize_f64 visit_f64 f64 => "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, EnvError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, EnvError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, EnvError> {
        // As envy: an empty variable is an empty list, not a list of one empty string.
        let pieces: Vec<Value> = if self.text.is_empty() {
            Vec::new()
        } else {
            self.text
                .split(',')
                .map(|piece| Value {
                    variable: self.variable.clone(),
                    text: piece.to_owned(),
                })
                .collect()
        };
        let variable = self.variable.clone();
        visitor
            .visit_seq(de::value::SeqDeserializer::new(pieces.into_iter()))
            .map_err(|err| match err {
                EnvError::Message(problem) => EnvError::Value { variable, problem },
                EnvError::Expected(expected) => EnvError::Value {
                    variable,
                    problem: format!("expected {expected}"),
                },
                other => other,
            })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, EnvError> {
        let text = self.text.trim().to_owned();
        let deserializer: de::value::StringDeserializer<EnvError> = text.into_deserializer();
        visitor
            .visit_enum(deserializer)
            .map_err(|err| self.attribute(err))
    }

    serde::forward_to_deserialize_any! {
        char str string unit bytes byte_buf map unit_struct tuple_struct identifier tuple
        ignored_any struct
    }
}

/// Deserializes `T` from the variables under `prefix`; every error names its variable.
pub(crate) fn from_iter<T, I>(prefix: &str, vars: I) -> Result<T, ConfigError>
where
    T: de::DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let entries = vars.into_iter().filter_map(|(name, text)| {
        let field = name.strip_prefix(prefix)?.to_lowercase();
        let variable = name.to_uppercase();
        Some((field, Value { variable, text }))
    });
    let map: MapDeserializer<'_, _, EnvError> = MapDeserializer::new(entries);
    T::deserialize(map).map_err(|err| match err {
        EnvError::Missing(field) => ConfigError::Missing {
            variable: format!("{prefix}{}", field.to_uppercase()),
        },
        EnvError::Value { variable, problem } => ConfigError::Variable { variable, problem },
        other => ConfigError::Env(other.to_string()),
    })
}
