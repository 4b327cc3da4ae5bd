//! Resource quantities (`100m`, `1.5Gi`, `2e3`) as exact decimals, with Kubernetes' parsing,
//! rounding and canonical formatting (`k8s.io/apimachinery/pkg/api/resource`).
//!
//! A [`Quantity`] stores a whole number of nano-units (10⁻⁹) in an `i128`, so sums of CPU and
//! memory requests are exact. Like Kubernetes, values finer than a nano-unit round up (away
//! from zero) to the next nano-unit. Unlike Kubernetes, which silently caps at 2⁶³−1 units,
//! values beyond ±(2⁶³−1) units are rejected as [`QuantityError::Overflow`] so a bad manifest
//! cannot turn into a huge request by accident.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

/// Nano-units per unit.
const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// Largest magnitude a quantity may have, in nano-units: 2⁶³−1 units.
const MAX_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;
/// Most decimal digits a nano count within [`MAX_NANOS`] can have.
const MAX_NANO_DIGITS: usize = 28;

/// The regular expression Kubernetes quotes when a quantity does not parse.
pub const QUANTITY_REGEX: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// How a quantity was written, which decides how it is printed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Powers of ten with SI suffixes: `100m`, `5`, `2k`, `1G`.
    DecimalSI,
    /// Powers of two with IEC suffixes: `1Ki`, `1536Mi`.
    BinarySI,
    /// Scientific notation: `2e3`, `100e-3`.
    DecimalExponent,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the shape of a number with an optional suffix (or is empty).
    #[error("quantities must match the regular expression '{QUANTITY_REGEX}'")]
    Format,
    /// The suffix is not one Kubernetes knows (`n u m k M G T P E Ki Mi Gi Ti Pi Ei eN`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value's magnitude is beyond 2⁶³−1 units.
    #[error("quantity is too large: the maximum magnitude is {max}", max = i64::MAX)]
    Overflow,
}

/// An exact, signed resource quantity such as `250m` CPU or `1.5Gi` memory.
///
/// Equality, ordering and hashing look at the value only: `1Ki == 1024`. The [`Format`] only
/// decides how the value is printed.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    /// The value in nano-units; its magnitude is at most [`MAX_NANOS`].
    nanos: i128,
    format: Format,
}

impl Quantity {
    /// Parses a Kubernetes quantity: an optionally signed decimal number with an optional
    /// SI suffix (`n u m "" k M G T P E`), binary suffix (`Ki Mi Gi Ti Pi Ei`) or decimal
    /// exponent (`e3`, `E-2`).
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let bytes = s.as_bytes();
        let mut pos = 0;
        let negative = match bytes.first() {
            None => return Err(QuantityError::Format),
            Some(b'-') => {
                pos = 1;
                true
            }
            Some(b'+') => {
                pos = 1;
                false
            }
            Some(_) => false,
        };
        let digits_while = |mut pos: usize| {
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            pos
        };
        let int_end = digits_while(pos);
        let int_digits = &bytes[pos..int_end];
        pos = int_end;
        let mut frac_digits: &[u8] = &[];
        if bytes.get(pos) == Some(&b'.') {
            let frac_end = digits_while(pos + 1);
            frac_digits = &bytes[pos + 1..frac_end];
            pos = frac_end;
        }
        // Kubernetes reads "", "-" and "." as zero; a number without any digit is refused here.
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(QuantityError::Format);
        }
        let suffix_start = pos;
        while pos < bytes.len() && b"eEinumkKMGTP".contains(&bytes[pos]) {
            pos += 1;
        }
        if pos < bytes.len() && matches!(bytes[pos], b'+' | b'-') {
            pos += 1;
        }
        if digits_while(pos) != bytes.len() {
            return Err(QuantityError::Format);
        }
        let (exp10, exp2, format) = interpret_suffix(&s[suffix_start..])?;

        // The value is digits × 10^(exp10 − |frac|) × 2^exp2; in nano-units, shift by 9 more.
        let mut digits: Vec<u8> = int_digits
            .iter()
            .chain(frac_digits)
            .map(|d| d - b'0')
            .skip_while(|&d| d == 0)
            .collect();
        if digits.is_empty() {
            return Ok(Quantity { nanos: 0, format });
        }
        if exp2 > 0 {
            multiply_by_power_of_two(&mut digits, exp2);
        }
        let shift = i128::from(exp10) - frac_digits.len() as i128 + 9;
        let magnitude = scale_to_integer(&digits, shift)?;
        let format = if format == Format::BinarySI && magnitude < NANOS_PER_UNIT {
            // Kubernetes: fractions of a unit are never printed with binary suffixes.
            Format::DecimalSI
        } else {
            format
        };
        Ok(Quantity {
            nanos: if negative { -magnitude } else { magnitude },
            format,
        })
    }

    /// Zero.
    pub fn zero() -> Self {
        Quantity {
            nanos: 0,
            format: Format::DecimalSI,
        }
    }

    /// `m` thousandths of a unit, e.g. `from_milli(250)` is `250m`.
    pub fn from_milli(m: i64) -> Self {
        Quantity {
            nanos: i128::from(m) * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    /// `v` whole units. `i64::MIN` saturates to −(2⁶³−1).
    pub fn from_value(v: i64) -> Self {
        Quantity {
            nanos: clamp(i128::from(v) * NANOS_PER_UNIT),
            format: Format::DecimalSI,
        }
    }

    /// The quantity of `nanos` nano-units (10⁻⁹), or `None` beyond ±(2⁶³−1) units.
    pub fn from_nanos(nanos: i128) -> Option<Self> {
        (nanos.abs() <= MAX_NANOS).then_some(Quantity {
            nanos,
            format: Format::DecimalSI,
        })
    }

    /// The exact value in nano-units.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in thousandths, rounded away from zero like Kubernetes' `MilliValue`;
    /// saturates at the `i64` bounds.
    pub fn milli_value(&self) -> i64 {
        saturate_i64(div_away_from_zero(self.nanos, 1_000_000))
    }

    /// The value in whole units, rounded away from zero like Kubernetes' `Value`.
    pub fn value(&self) -> i64 {
        saturate_i64(div_away_from_zero(self.nanos, NANOS_PER_UNIT))
    }

    /// The value as a float, for scoring and display; not exact.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }

    /// How the quantity prints.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The same value, printed in `format`.
    pub fn with_format(self, format: Format) -> Self {
        Quantity { format, ..self }
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The sum, or `None` if it would exceed ±(2⁶³−1) units. Keeps `self`'s format unless
    /// `self` is zero, as Kubernetes does.
    pub fn checked_add(&self, o: &Self) -> Option<Self> {
        let nanos = self.nanos + o.nanos; // cannot overflow i128: both are within MAX_NANOS
        (nanos.abs() <= MAX_NANOS).then_some(Quantity {
            nanos,
            format: self.sum_format(o),
        })
    }

    /// The difference, or `None` if it would exceed ±(2⁶³−1) units.
    pub fn checked_sub(&self, o: &Self) -> Option<Self> {
        self.checked_add(&-*o)
    }

    fn sum_format(&self, o: &Self) -> Format {
        if self.nanos == 0 {
            o.format
        } else {
            self.format
        }
    }

    /// The canonical text: number and suffix, as Kubernetes' `Quantity.String()` prints it.
    fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == Format::BinarySI
            && (self.nanos.abs() < 1024 * NANOS_PER_UNIT || self.nanos % NANOS_PER_UNIT != 0)
        {
            // Small or fractional binary values print in decimal, which is exact.
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let mut units = self.nanos / NANOS_PER_UNIT;
            let mut power = 0;
            while units.abs() >= 1024 && units % 1024 == 0 && power < BINARY_SUFFIXES.len() - 1 {
                units /= 1024;
                power += 1;
            }
            return format!("{units}{}", BINARY_SUFFIXES[power]);
        }
        // Strip factors of ten, then move the exponent down to a multiple of three.
        let mut mantissa = self.nanos;
        let mut exponent: i32 = -9;
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        let r = exponent.rem_euclid(3);
        mantissa *= 10i128.pow(r as u32);
        exponent -= r;
        match format {
            Format::DecimalSI => match decimal_suffix(exponent) {
                Some(suffix) => format!("{mantissa}{suffix}"),
                None => format!("{mantissa}e{exponent}"),
            },
            _ if exponent == 0 => mantissa.to_string(),
            _ => format!("{mantissa}e{exponent}"),
        }
    }
}

/// Binary suffixes by power of 1024.
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// The SI suffix of a power of ten that is a multiple of three.
fn decimal_suffix(exponent: i32) -> Option<&'static str> {
    Some(match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => return None,
    })
}

/// A suffix as (power of ten, power of two, format).
fn interpret_suffix(suffix: &str) -> Result<(i64, u32, Format), QuantityError> {
    let decimal = |e| Ok((e, 0, Format::DecimalSI));
    let binary = |e| Ok((0, e, Format::BinarySI));
    match suffix {
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|rest| !rest.is_empty())
                .and_then(|rest| rest.parse::<i64>().ok())
                .ok_or(QuantityError::Suffix)?;
            Ok((exponent, 0, Format::DecimalExponent))
        }
    }
}

/// Multiplies a big-endian decimal digit vector by 2^`power` in place.
fn multiply_by_power_of_two(digits: &mut Vec<u8>, mut power: u32) {
    while power > 0 {
        let step = power.min(20);
        power -= step;
        let factor = 1u64 << step;
        let mut carry = 0u64;
        for d in digits.iter_mut().rev() {
            let v = u64::from(*d) * factor + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }
}

/// `digits × 10^shift`, rounded up to an integer, if its magnitude is within [`MAX_NANOS`].
/// `digits` has no leading zero and is not empty.
fn scale_to_integer(digits: &[u8], shift: i128) -> Result<i128, QuantityError> {
    let len = digits.len() as i128;
    let (integer, round_up): (&[u8], bool) = if shift >= 0 {
        if len + shift > MAX_NANO_DIGITS as i128 {
            return Err(QuantityError::Overflow);
        }
        (digits, false)
    } else if -shift >= len {
        // The whole value is below one nano-unit and not zero: round up to one.
        (&[], true)
    } else {
        let split = (len + shift) as usize;
        (&digits[..split], digits[split..].iter().any(|&d| d != 0))
    };
    if integer.len() > MAX_NANO_DIGITS {
        return Err(QuantityError::Overflow);
    }
    let mut value: i128 = 0;
    for &d in integer {
        value = value * 10 + i128::from(d);
    }
    if shift > 0 {
        value *= 10i128.pow(shift as u32);
    }
    if round_up {
        value += 1;
    }
    if value > MAX_NANOS {
        return Err(QuantityError::Overflow);
    }
    Ok(value)
}

/// `n / d` rounded away from zero (`d` > 0).
fn div_away_from_zero(n: i128, d: i128) -> i128 {
    let q = n / d;
    if n % d == 0 {
        q
    } else if n > 0 {
        q + 1
    } else {
        q - 1
    }
}

fn saturate_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

fn clamp(nanos: i128) -> i128 {
    nanos.clamp(-MAX_NANOS, MAX_NANOS)
}

impl Default for Quantity {
    fn default() -> Self {
        Quantity::zero()
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl Hash for Quantity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.nanos.hash(state);
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl Add for Quantity {
    type Output = Quantity;

    /// Saturates at ±(2⁶³−1) units.
    fn add(self, o: Quantity) -> Quantity {
        Quantity {
            nanos: clamp(self.nanos + o.nanos),
            format: self.sum_format(&o),
        }
    }
}

impl Sub for Quantity {
    type Output = Quantity;

    /// Saturates at ±(2⁶³−1) units.
    fn sub(self, o: Quantity) -> Quantity {
        self + -o
    }
}

impl AddAssign for Quantity {
    fn add_assign(&mut self, o: Quantity) {
        *self = *self + o;
    }
}

impl SubAssign for Quantity {
    fn sub_assign(&mut self, o: Quantity) {
        *self = *self - o;
    }
}

impl Neg for Quantity {
    type Output = Quantity;

    fn neg(self) -> Quantity {
        Quantity {
            nanos: -self.nanos,
            format: self.format,
        }
    }
}

impl Sum for Quantity {
    /// Saturating sum; the format of the first non-zero term.
    fn sum<I: Iterator<Item = Quantity>>(iter: I) -> Quantity {
        iter.fold(Quantity::zero(), Add::add)
    }
}

impl<'a> Sum<&'a Quantity> for Quantity {
    fn sum<I: Iterator<Item = &'a Quantity>>(iter: I) -> Quantity {
        iter.copied().sum()
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

impl TryFrom<&K8sQuantity> for Quantity {
    type Error = QuantityError;

    /// Parses the string, ignoring surrounding whitespace as Kubernetes' JSON decoding does.
    fn try_from(q: &K8sQuantity) -> Result<Self, Self::Error> {
        Quantity::parse(q.0.trim())
    }
}

impl TryFrom<K8sQuantity> for Quantity {
    type Error = QuantityError;

    fn try_from(q: K8sQuantity) -> Result<Self, Self::Error> {
        Quantity::try_from(&q)
    }
}

impl From<&Quantity> for K8sQuantity {
    fn from(q: &Quantity) -> Self {
        K8sQuantity(q.to_string())
    }
}

impl From<Quantity> for K8sQuantity {
    fn from(q: Quantity) -> Self {
        K8sQuantity(q.to_string())
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.canonical())
    }
}

impl<'de> Deserialize<'de> for Quantity {
    /// Accepts a string (surrounding whitespace ignored) or a JSON number, as Kubernetes does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;

        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity string such as \"100m\" or \"1Gi\", or a number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Quantity::parse(v.trim()).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Quantity::parse(&v.to_string()).map_err(E::custom)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                if !v.is_finite() {
                    return Err(E::custom(QuantityError::Format));
                }
                Quantity::parse(&format!("{v}")).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests;
