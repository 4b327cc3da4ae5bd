//! Label selectors: parsing, printing and matching with the semantics of Kubernetes'
//! `k8s.io/apimachinery/pkg/labels`.
//!
//! The string syntax is the one of `?labelSelector=` and `kubectl -l`:
//! `a=b,c==d,e!=f,g in (x,y),h notin (z),i,!j,k>3`. The structured form of API objects
//! (`matchLabels` + `matchExpressions`) converts with [`LabelSelector::from_api`]. A selector
//! with no requirements matches everything.

use crate::validation::{is_qualified_name, is_valid_label_value};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

mod parse;

/// How a [`Requirement`] compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`: the label is present with this value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>3`: the label is present, an integer, and greater than the value.
    GreaterThan,
    /// `key<3`: the label is present, an integer, and less than the value.
    LessThan,
}

/// One condition of a selector: a label key, an operator and the values it compares with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key, a qualified name such as `app` or `example.com/tier`.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// The values, sorted and without duplicates: one for `=`, `!=`, `>` and `<`, at least
    /// one for `in` and `notin`, none for exists and does-not-exist.
    pub values: Vec<String>,
}

/// A conjunction of requirements. The default (no requirements) selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// The requirements, all of which must hold; sorted by key (stable) when built by this
    /// module.
    pub requirements: Vec<Requirement>,
}

/// Why a label selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string is not selector syntax; `message` says what was found and what was expected,
    /// in Kubernetes' words, and `position` is the byte offset of the offending token.
    #[error("{message}")]
    Syntax {
        /// Human-readable description, e.g. `unable to parse requirement: found '', expected: in, notin, =, ==, !=, gt, lt`.
        message: String,
        /// Byte offset of the offending token in the selector string.
        position: usize,
    },
    /// A label key is not a qualified name.
    #[error("invalid label key {key:?}: {}", reasons.join("; "))]
    InvalidKey {
        /// The key.
        key: String,
        /// Every rule it breaks, as Kubernetes words them.
        reasons: Vec<String>,
    },
    /// A value is not a valid label value.
    #[error("invalid label value {value:?} for key {key:?}: {}", reasons.join("; "))]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
        /// Every rule it breaks, as Kubernetes words them.
        reasons: Vec<String>,
    },
    /// `in` or `notin` without values.
    #[error("for 'in', 'notin' operators, values set can't be empty (key {key:?})")]
    EmptyValues {
        /// The key of the requirement.
        key: String,
    },
    /// `=` or `!=` with other than one value.
    #[error("exact-match compatibility requires one single value (key {key:?})")]
    NotOneValue {
        /// The key of the requirement.
        key: String,
    },
    /// Exists or does-not-exist with values.
    #[error("values set must be empty for exists and does not exist (key {key:?})")]
    UnexpectedValues {
        /// The key of the requirement.
        key: String,
    },
    /// `>` or `<` with other than one value.
    #[error("for 'Gt', 'Lt' operators, exactly one value is required (key {key:?})")]
    NotOneNumber {
        /// The key of the requirement.
        key: String,
    },
    /// `>` or `<` with a value that is not a 64-bit integer.
    #[error(
        "for 'Gt', 'Lt' operators, the value must be an integer (key {key:?}, value {value:?})"
    )]
    NotAnInteger {
        /// The key of the requirement.
        key: String,
        /// The value.
        value: String,
    },
    /// A `matchExpressions` operator other than `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error("{operator:?} is not a valid label selector operator")]
    UnknownOperator {
        /// The operator as written.
        operator: String,
    },
}

impl Operator {
    /// Whether a requirement with this operator matches a label that has `value` (or is
    /// absent, when `value` is `None`), given the requirement's `values`.
    fn matches(self, values: &[String], value: Option<&str>) -> bool {
        let has = |v: &str| values.iter().any(|x| x == v);
        match self {
            Operator::Equals | Operator::In => value.is_some_and(has),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(has),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(label), [wanted]) = (value, values) else {
                    return false;
                };
                let (Ok(label), Ok(wanted)) = (label.parse::<i64>(), wanted.parse::<i64>()) else {
                    return false;
                };
                if self == Operator::GreaterThan {
                    label > wanted
                } else {
                    label < wanted
                }
            }
        }
    }
}

impl Requirement {
    /// A validated requirement, as Kubernetes' `labels.NewRequirement`: the key must be a
    /// qualified name, every value a label value, and the number of values must fit the
    /// operator. Values are sorted and deduplicated.
    pub fn new<I, V>(
        key: impl Into<String>,
        operator: Operator,
        values: I,
    ) -> Result<Self, SelectorError>
    where
        I: IntoIterator<Item = V>,
        V: Into<String>,
    {
        let key = key.into();
        let mut values: Vec<String> = values.into_iter().map(Into::into).collect();
        validate_key(&key)?;
        let count = values.len();
        match operator {
            Operator::In | Operator::NotIn if count == 0 => {
                return Err(SelectorError::EmptyValues { key });
            }
            Operator::Equals | Operator::NotEquals if count != 1 => {
                return Err(SelectorError::NotOneValue { key });
            }
            Operator::Exists | Operator::DoesNotExist if count != 0 => {
                return Err(SelectorError::UnexpectedValues { key });
            }
            Operator::GreaterThan | Operator::LessThan => {
                if count != 1 {
                    return Err(SelectorError::NotOneNumber { key });
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(SelectorError::NotAnInteger {
                        key,
                        value: values.swap_remove(0),
                    });
                }
            }
            _ => {}
        }
        for value in &values {
            let reasons = is_valid_label_value(value);
            if !reasons.is_empty() {
                return Err(SelectorError::InvalidValue {
                    key,
                    value: value.clone(),
                    reasons,
                });
            }
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// Whether the labels satisfy this requirement. `!=` and `notin` match absent labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.operator
            .matches(&self.values, labels.get(&self.key).map(String::as_str))
    }
}

/// Checks a label key, as Kubernetes' `validateLabelKey`.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let reasons = is_qualified_name(key);
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidKey {
            key: key.to_string(),
            reasons,
        })
    }
}

impl fmt::Display for Requirement {
    /// Kubernetes' `Requirement.String()`: `!k`, `k`, `k=v`, `k!=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k>3`, `k<3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        let key = &self.key;
        match self.operator {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals => write!(f, "{key}={values}"),
            Operator::NotEquals => write!(f, "{key}!={values}"),
            Operator::In => write!(f, "{key} in ({values})"),
            Operator::NotIn => write!(f, "{key} notin ({values})"),
            Operator::GreaterThan => write!(f, "{key}>{values}"),
            Operator::LessThan => write!(f, "{key}<{values}"),
        }
    }
}

impl LabelSelector {
    /// A selector of these requirements, sorted by key (stably) as Kubernetes sorts them.
    pub fn new(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// Parses the Kubernetes string syntax. Whitespace around tokens is ignored; the empty
    /// string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        parse::parse(s).map(LabelSelector::new)
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// Whether this selector matches every object (has no requirements).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Converts the structured selector of API objects (`matchLabels` and `matchExpressions`
    /// with `In`, `NotIn`, `Exists`, `DoesNotExist`), as Kubernetes'
    /// `metav1.LabelSelectorAsSelector`. An empty selector selects everything; callers that
    /// hold an absent (`None`) selector decide themselves whether that means nothing.
    pub fn from_api(sel: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key.as_str(),
                Operator::Equals,
                [value.as_str()],
            )?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        operator: other.to_string(),
                    });
                }
            };
            let values = expr.values.iter().flatten().map(String::as_str);
            requirements.push(Requirement::new(expr.key.as_str(), operator, values)?);
        }
        Ok(LabelSelector::new(requirements))
    }

    /// The selector of exactly these labels (`k1=v1,k2=v2`), as `labels.SelectorFromSet`.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k.as_str(), Operator::Equals, [v.as_str()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector::new(requirements))
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabelSelector::parse(s)
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string: requirements joined by `,`; it parses back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
