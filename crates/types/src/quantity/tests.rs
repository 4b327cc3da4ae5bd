use super::*;
use proptest::prelude::*;

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

#[test]
fn parses_common_forms() {
    assert_eq!(q("100m").milli_value(), 100);
    assert_eq!(q("1.5Gi").value(), 1_610_612_736);
    assert_eq!(q("2e3").value(), 2000);
    assert_eq!(q("1Ki").value(), 1024);
    assert_eq!(q("0.5").milli_value(), 500);
    assert_eq!(q("1E").value(), 1_000_000_000_000_000_000);
    assert_eq!(q("-1").value(), -1);
    assert_eq!(q("1n").as_nanos(), 1);
    assert_eq!(q("1u").as_nanos(), 1000);
    assert_eq!(q("+5k").value(), 5000);
    assert_eq!(q("1.").value(), 1);
    assert_eq!(q(".5").milli_value(), 500);
    assert_eq!(q("0").format(), Format::DecimalSI);
    assert_eq!(q("1e-3").milli_value(), 1);
    assert_eq!(q("1E+3").value(), 1000);
    assert_eq!(q("007").value(), 7);
}

#[test]
fn formats_follow_suffixes() {
    assert_eq!(q("1Ki").format(), Format::BinarySI);
    assert_eq!(q("1k").format(), Format::DecimalSI);
    assert_eq!(q("1e3").format(), Format::DecimalExponent);
    // Binary fractions of a unit become decimal, as in Kubernetes.
    assert_eq!(q("0.0001Ki").format(), Format::DecimalSI);
}

#[test]
fn rejects_garbage() {
    for bad in [
        "", "-", "+", ".", "abc", "1x", "1 Gi", " 1", "1Gi ", "1.2.3", "1e", "1e+", "1Kb", "1ki",
        "1KiB", "--1", "1-", "e3", "1e3.5", "Gi", "1mm",
    ] {
        assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
    }
    assert_eq!(Quantity::parse(""), Err(QuantityError::Format));
    assert_eq!(Quantity::parse("1x"), Err(QuantityError::Format));
    assert_eq!(Quantity::parse("1Kb"), Err(QuantityError::Format));
    assert_eq!(Quantity::parse("1KM"), Err(QuantityError::Suffix));
    assert_eq!(Quantity::parse("1e"), Err(QuantityError::Suffix));
    assert_eq!(
        QuantityError::Format.to_string(),
        "quantities must match the regular expression \
         '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
}

#[test]
fn rejects_overflow() {
    for big in [
        "10E",
        "9223372036854775808",
        "1e19",
        "8Ei",
        "1e99999999999",
        "99999999999999999999999999999999999999999999",
    ] {
        assert_eq!(Quantity::parse(big), Err(QuantityError::Overflow), "{big}");
    }
    assert_eq!(q("9223372036854775807").value(), i64::MAX);
    assert_eq!(q("-9223372036854775807").value(), -i64::MAX);
    assert_eq!(q("7Ei").value(), 7 << 60);
    // An exponent too large even for i64 is a suffix error, like Kubernetes.
    assert_eq!(
        Quantity::parse("1e99999999999999999999"),
        Err(QuantityError::Suffix)
    );
}

#[test]
fn rounds_sub_nano_values_up() {
    assert_eq!(q("0.1n").as_nanos(), 1);
    assert_eq!(q("1e-30").as_nanos(), 1);
    assert_eq!(q("-1e-30").as_nanos(), -1);
    assert_eq!(q("1.0000000001").as_nanos(), 1_000_000_001);
    assert_eq!(q("0e-30").as_nanos(), 0);
    assert_eq!(
        q("0.0000000000000000000000000000000000000000000001").as_nanos(),
        1
    );
    assert_eq!(q("0.00000000001Ki").as_nanos(), 11); // 10.24 nanos, rounded up
}

#[test]
fn value_and_milli_value_round_away_from_zero() {
    assert_eq!(q("1m").value(), 1);
    assert_eq!(q("-1m").value(), -1);
    assert_eq!(q("1n").milli_value(), 1);
    assert_eq!(q("1500m").value(), 2);
    assert_eq!(q("2").milli_value(), 2000);
    assert_eq!(q("9223372036854775807").milli_value(), i64::MAX);
}

#[test]
fn canonical_strings() {
    for (input, canonical) in [
        ("0", "0"),
        ("0Gi", "0"),
        ("100m", "100m"),
        ("0.1", "100m"),
        ("1.5Gi", "1536Mi"),
        ("1024Mi", "1Gi"),
        ("1024", "1024"),
        ("2000", "2k"),
        ("2e3", "2e3"),
        ("0.1e0", "100e-3"),
        ("1e1", "10"),
        ("1e-1", "100e-3"),
        ("1Ki", "1Ki"),
        ("1025Ki", "1025Ki"),
        ("512", "512"),
        ("0.5Ki", "512"),
        ("1.0000001Ki", "1024000102400n"),
        ("1000000k", "1G"),
        ("12345", "12345"),
        ("1.5", "1500m"),
        ("-1.5", "-1500m"),
        ("-1Ki", "-1Ki"),
        ("1u", "1u"),
        ("1n", "1n"),
        ("10n", "10n"),
        ("1E", "1E"),
        ("7Ei", "7Ei"),
        ("1e18", "1e18"),
    ] {
        assert_eq!(q(input).to_string(), canonical, "canonical form of {input}");
    }
}

#[test]
fn equality_ignores_format() {
    assert_eq!(q("1Ki"), q("1024"));
    assert_eq!(q("1k"), q("1e3"));
    assert!(q("1Gi") > q("1G"));
    assert!(q("-1") < Quantity::zero());
}

#[test]
fn arithmetic() {
    let a = q("1Gi");
    let b = q("512Mi");
    assert_eq!((a + b).to_string(), "1536Mi");
    assert_eq!((a - b).to_string(), "512Mi");
    assert_eq!((-a).to_string(), "-1Gi");
    assert_eq!((Quantity::zero() + b).format(), Format::BinarySI);
    let max = Quantity::from_value(i64::MAX);
    assert_eq!(max.checked_add(&Quantity::from_milli(1)), None);
    assert_eq!(max + Quantity::from_value(1), max);
    assert_eq!((-max).checked_sub(&Quantity::from_value(1)), None);
    assert_eq!(max.checked_sub(&max), Some(Quantity::zero()));
    let total: Quantity = [q("100m"), q("250m"), q("1")].iter().sum();
    assert_eq!(total.to_string(), "1350m");
    assert_eq!(Quantity::from_value(i64::MIN).value(), -i64::MAX);
    assert_eq!(Quantity::from_nanos(MAX_NANOS + 1), None);
}

#[test]
fn k8s_openapi_conversions() {
    let k = K8sQuantity(" 1.5Gi ".to_string());
    let ours = Quantity::try_from(&k).expect("parses");
    assert_eq!(K8sQuantity::from(ours).0, "1536Mi");
    assert!(Quantity::try_from(K8sQuantity("lots".to_string())).is_err());
}

#[test]
fn serde_round_trip() {
    let v: Quantity = serde_json::from_str("\"250m\"").expect("string");
    assert_eq!(serde_json::to_string(&v).expect("serialize"), "\"250m\"");
    let n: Quantity = serde_json::from_str("3").expect("integer");
    assert_eq!(n.value(), 3);
    let f: Quantity = serde_json::from_str("0.5").expect("float");
    assert_eq!(f.milli_value(), 500);
    assert!(serde_json::from_str::<Quantity>("\"x\"").is_err());
    assert!(serde_json::from_str::<Quantity>("true").is_err());
}

fn suffix() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "", "n", "u", "m", "k", "M", "G", "T", "P", "Ki", "Mi", "Gi", "Ti", "Pi", "e0", "e3",
        "e-3", "E6", "e-12",
    ])
}

fn quantity_string() -> impl Strategy<Value = String> {
    (
        prop::option::of(prop::sample::select(vec!["-", "+"])),
        "[0-9]{1,8}",
        prop::option::of("[0-9]{0,6}"),
        suffix(),
    )
        .prop_map(|(sign, int, frac, suffix)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{}{int}{frac}{suffix}", sign.unwrap_or(""))
        })
}

fn quantity() -> impl Strategy<Value = Quantity> {
    (
        -MAX_NANOS..=MAX_NANOS,
        prop::sample::select(vec![
            Format::DecimalSI,
            Format::BinarySI,
            Format::DecimalExponent,
        ]),
    )
        .prop_map(|(nanos, format)| Quantity { nanos, format })
}

proptest! {
    #[test]
    fn display_then_parse_is_identity(q in quantity()) {
        let text = q.to_string();
        let back = Quantity::parse(&text);
        prop_assert_eq!(back, Ok(q), "{}", text);
    }

    #[test]
    fn parsed_strings_round_trip(s in quantity_string()) {
        let q = match Quantity::parse(&s) {
            Err(QuantityError::Overflow) => return Ok(()), // e.g. 99999999P
            other => other.expect("generated strings are well-formed"),
        };
        let text = q.to_string();
        let back = Quantity::parse(&text).expect("canonical strings parse");
        prop_assert_eq!(back, q);
        // Canonical text is stable.
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn addition_commutes(a in quantity(), b in quantity()) {
        prop_assert_eq!(a + b, b + a);
        prop_assert_eq!(a.checked_add(&b), b.checked_add(&a));
    }

    #[test]
    fn addition_matches_milli_values(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000) {
        let (qa, qb) = (Quantity::from_milli(a), Quantity::from_milli(b));
        let sum = qa.checked_add(&qb).expect("small values do not overflow");
        prop_assert_eq!(sum.milli_value(), a + b);
        prop_assert_eq!(qa.checked_sub(&qb).map(|d| d.milli_value()), Some(a - b));
        prop_assert_eq!(Quantity::parse(&format!("{a}m")), Ok(qa));
    }

    #[test]
    fn never_panics_on_arbitrary_input(s in "\\PC{0,40}") {
        let _ = Quantity::parse(&s);
    }

    #[test]
    fn never_panics_on_quantity_like_input(s in "[-+]?[0-9.]{0,30}[eEinumkKMGTP]{0,3}[-+]?[0-9]{0,25}") {
        if let Ok(q) = Quantity::parse(&s) {
            prop_assert_eq!(Quantity::parse(&q.to_string()), Ok(q));
        }
    }
}
