//! One-byte tags: enums that travel as a single byte (kinds, roles, proof systems).

/// Defines a `Copy` enum whose discriminants are its wire bytes, serialized as that byte,
/// with `ALL`, `as_str()` and a `TryFrom<u8>` that names what it could not read.
macro_rules! byte_tag {
    ($(#[$meta:meta])* $vis:vis enum $name:ident ($what:literal) {
        $($(#[$vmeta:meta])* $variant:ident = $byte:literal => $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(into = "u8", try_from = "u8")]
        $vis enum $name {
            $($(#[$vmeta])* $variant = $byte,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = $crate::WireError;
            fn try_from(b: u8) -> Result<$name, $crate::WireError> {
                match b {
                    $($byte => Ok($name::$variant),)+
                    _ => Err($crate::WireError::UnknownTag { what: $what, tag: b }),
                }
            }
        }
    };
}

pub(crate) use byte_tag;
