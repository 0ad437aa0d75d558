//! Kubernetes resource quantities (`1Gi`, `64M`, `500m`, `2`, `1e3`): kept exactly as written for
//! round trips, parsed on demand into bytes or milli-units.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a quantity string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not match `<sign><digits>[.<digits>][<suffix>]`.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' (got {0:?})"
    )]
    Malformed(String),
    /// The value does not fit the range ferrovirt computes in.
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
}

/// A Kubernetes `resource.Quantity`, stored as the text the user wrote.
///
/// It deserializes from a string or a number (Kubernetes' int-or-string) and always serializes as a
/// string, as the Kubernetes API server does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Quantity(pub String);

/// A parsed quantity: an exact rational `numerator / 10^scale_down` times `base^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    /// All digits (integer and fraction) as one integer.
    digits: u128,
    /// How many of those digits were after the decimal point.
    fraction_digits: u32,
    /// Multiplier from the suffix: binary (1024^n) or decimal (10^n, may be negative).
    multiplier: Multiplier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Multiplier {
    Binary(u32),
    Decimal(i32),
}

impl Quantity {
    /// Wraps a quantity text without checking it (see [`Quantity::parse`]).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the text is a well-formed quantity.
    pub fn validate(&self) -> Result<(), QuantityError> {
        parse(&self.0).map(|_| ())
    }

    /// The value rounded up to a whole unit (bytes for memory), as Kubernetes' `Value()` does.
    pub fn value(&self) -> Result<i128, QuantityError> {
        self.scaled(0)
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue()`), e.g. CPU `500m` -> 500.
    pub fn milli_value(&self) -> Result<i128, QuantityError> {
        self.scaled(3)
    }

    /// The value in bytes; an error for negative quantities.
    pub fn to_bytes(&self) -> Result<u64, QuantityError> {
        let value = self.value()?;
        u64::try_from(value).map_err(|_| QuantityError::OutOfRange(self.0.clone()))
    }

    /// True when the quantity is exactly zero (or does not parse, which validation reports).
    pub fn is_zero(&self) -> bool {
        matches!(parse(&self.0), Ok(p) if p.digits == 0)
    }

    /// value * 10^extra_decimal_digits, rounded away from zero (ceil for positives).
    fn scaled(&self, extra_decimal_digits: i32) -> Result<i128, QuantityError> {
        let out_of_range = || QuantityError::OutOfRange(self.0.clone());
        let p = parse(&self.0)?;
        // numerator / denominator, both non-negative.
        let mut numerator: u128 = p.digits;
        let mut denominator: u128 = 10u128
            .checked_pow(p.fraction_digits)
            .ok_or_else(out_of_range)?;
        match p.multiplier {
            Multiplier::Binary(power) => {
                let factor = 1024u128.checked_pow(power).ok_or_else(out_of_range)?;
                numerator = numerator.checked_mul(factor).ok_or_else(out_of_range)?;
            }
            Multiplier::Decimal(exp) => {
                let exp = exp + extra_decimal_digits;
                if exp >= 0 {
                    let factor = 10u128
                        .checked_pow(exp.unsigned_abs())
                        .ok_or_else(out_of_range)?;
                    numerator = numerator.checked_mul(factor).ok_or_else(out_of_range)?;
                } else {
                    let factor = 10u128
                        .checked_pow(exp.unsigned_abs())
                        .ok_or_else(out_of_range)?;
                    denominator = denominator.checked_mul(factor).ok_or_else(out_of_range)?;
                }
            }
        }
        if let Multiplier::Binary(_) = p.multiplier {
            let factor = 10u128
                .checked_pow(extra_decimal_digits.unsigned_abs())
                .ok_or_else(out_of_range)?;
            numerator = numerator.checked_mul(factor).ok_or_else(out_of_range)?;
        }
        let whole = numerator / denominator;
        let rounded = if numerator.is_multiple_of(denominator) {
            whole
        } else {
            whole + 1
        };
        let signed = i128::try_from(rounded).map_err(|_| out_of_range())?;
        Ok(if p.negative { -signed } else { signed })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

fn parse(text: &str) -> Result<Parsed, QuantityError> {
    let malformed = || QuantityError::Malformed(text.to_owned());
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(malformed());
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let mut digits: u128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        let d = u128::from(c.to_digit(10).ok_or_else(malformed)?);
        digits = digits
            .checked_mul(10)
            .and_then(|v| v.checked_add(d))
            .ok_or_else(|| QuantityError::OutOfRange(text.to_owned()))?;
    }
    let fraction_digits = u32::try_from(frac_part.len()).map_err(|_| malformed())?;
    let multiplier = match suffix {
        "" => Multiplier::Decimal(0),
        "Ki" => Multiplier::Binary(1),
        "Mi" => Multiplier::Binary(2),
        "Gi" => Multiplier::Binary(3),
        "Ti" => Multiplier::Binary(4),
        "Pi" => Multiplier::Binary(5),
        "Ei" => Multiplier::Binary(6),
        "n" => Multiplier::Decimal(-9),
        "u" => Multiplier::Decimal(-6),
        "m" => Multiplier::Decimal(-3),
        "k" => Multiplier::Decimal(3),
        "M" => Multiplier::Decimal(6),
        "G" => Multiplier::Decimal(9),
        "T" => Multiplier::Decimal(12),
        "P" => Multiplier::Decimal(15),
        "E" => Multiplier::Decimal(18),
        exp if exp.starts_with(['e', 'E']) => {
            let value: i32 = exp[1..].parse().map_err(|_| malformed())?;
            if !(-30..=30).contains(&value) {
                return Err(QuantityError::OutOfRange(text.to_owned()));
            }
            Multiplier::Decimal(value)
        }
        _ => return Err(malformed()),
    };
    Ok(Parsed {
        negative,
        digits,
        fraction_digits,
        multiplier,
    })
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;
        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"1Gi\", \"500m\" or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                if v.is_finite() {
                    Ok(Quantity(v.to_string()))
                } else {
                    Err(E::custom("a quantity must be a finite number"))
                }
            }
        }
        deserializer.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(Quantity::from("1Gi").to_bytes(), Ok(1 << 30));
        assert_eq!(Quantity::from("128Mi").to_bytes(), Ok(128 << 20));
        assert_eq!(Quantity::from("64M").to_bytes(), Ok(64_000_000));
        assert_eq!(Quantity::from("10Mi").to_bytes(), Ok(10 * 1024 * 1024));
        assert_eq!(Quantity::from("1.5Gi").to_bytes(), Ok(3 << 29));
        assert_eq!(Quantity::from("1e3").value(), Ok(1000));
        assert_eq!(Quantity::from("2").value(), Ok(2));
    }

    #[test]
    fn milli_values_and_rounding() {
        assert_eq!(Quantity::from("500m").milli_value(), Ok(500));
        assert_eq!(Quantity::from("500m").value(), Ok(1));
        assert_eq!(Quantity::from("2").milli_value(), Ok(2000));
        assert_eq!(Quantity::from("-1Gi").value(), Ok(-(1 << 30)));
        assert!(Quantity::from("0").is_zero());
        assert!(!Quantity::from("1m").is_zero());
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for bad in ["", "Gi", "1GB", "1..2", "abc", "-", "1e", "1e999"] {
            assert!(Quantity::from(bad).validate().is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Quantity::from("1Ei").milli_value(),
            Ok(v) if v == (1i128 << 60) * 1000
        ));
        assert_eq!(
            Quantity::from("99999999999999999999999999999999999999999").value(),
            Err(QuantityError::OutOfRange(
                "99999999999999999999999999999999999999999".into()
            ))
        );
    }

    #[test]
    fn int_or_string_deserialization_serializes_as_string() {
        let q: Quantity = serde_json::from_value(serde_json::json!(1024)).unwrap();
        assert_eq!(serde_json::to_value(&q).unwrap(), serde_json::json!("1024"));
    }
}
