//! Closed sets of named values (`--sparsity-method sparsegpt`, `--outtype q4_k_m`). Each type
//! lists its values, their names and one-line helps once, here in the library; the CLI builds its
//! parsers and `--help` lists from that (`src/cli/`), so the library does not depend on the CLI's
//! parser.

/// A field-less enum whose values have names.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value, in the order `--help` lists them.
    fn all() -> &'static [Self];
    /// The value's name on the command line.
    fn name(self) -> &'static str;
    /// One line for `--help` (None: the name says it).
    fn help(self) -> Option<&'static str> {
        None
    }
    fn from_name(name: &str) -> Option<Self> {
        Self::all().iter().copied().find(|v| v.name() == name)
    }
}

/// `impl Choice` for a field-less enum from its table: `Variant => "name"` or
/// `Variant => "name": "help"`, in `--help`'s order.
#[macro_export]
macro_rules! impl_choice {
    ($ty:ty { $($variant:ident => $name:literal $(: $help:literal)?),+ $(,)? }) => {
        impl $crate::util::choice::Choice for $ty {
            fn all() -> &'static [Self] {
                &[$(Self::$variant),+]
            }
            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
            fn help(self) -> Option<&'static str> {
                match self {
                    $(Self::$variant => {
                        let help: &[&'static str] = &[$($help)?];
                        help.first().copied()
                    }),+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Choice;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fruit {
        Apple,
        BloodOrange,
    }
    crate::impl_choice!(Fruit { Apple => "apple", BloodOrange => "blood-orange": "red inside" });

    #[test]
    fn names_helps_and_parsing_come_from_the_table() {
        assert_eq!(Fruit::all(), &[Fruit::Apple, Fruit::BloodOrange]);
        assert_eq!(Fruit::BloodOrange.name(), "blood-orange");
        assert_eq!(Fruit::Apple.help(), None);
        assert_eq!(Fruit::BloodOrange.help(), Some("red inside"));
        assert_eq!(Fruit::from_name("blood-orange"), Some(Fruit::BloodOrange));
        assert_eq!(Fruit::from_name("BloodOrange"), None);
    }
}
