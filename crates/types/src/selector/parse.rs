//! The lexer and recursive-descent parser of the label selector string syntax, a transcription
//! of `k8s.io/apimachinery/pkg/labels/selector.go` (`Lexer`, `Parser`) with its error texts.

use super::{Operator, Requirement, SelectorError, validate_key};

/// A token of the selector syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    /// `!`
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// A token with its text and byte offset.
#[derive(Debug, Clone, Copy)]
struct Item<'a> {
    token: Token,
    literal: &'a str,
    position: usize,
}

/// Whether the parser is reading a key and operator, or values (where the keywords `in` and
/// `notin` are ordinary identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the input into tokens; the last one is always [`Token::EndOfString`].
fn lex(input: &str) -> Vec<Item<'_>> {
    let bytes = input.as_bytes();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        let start = pos;
        if pos >= bytes.len() {
            items.push(Item {
                token: Token::EndOfString,
                literal: "",
                position: start,
            });
            return items;
        }
        let token = if is_special_symbol(bytes[pos]) {
            // Longest match: the two-character operators, else the single symbol.
            let two = input.get(pos..pos + 2);
            let (token, len) = match (bytes[pos], two) {
                (_, Some("==")) => (Token::DoubleEquals, 2),
                (_, Some("!=")) => (Token::NotEquals, 2),
                (b'=', _) => (Token::Equals, 1),
                (b'!', _) => (Token::DoesNotExist, 1),
                (b'(', _) => (Token::OpenPar, 1),
                (b')', _) => (Token::ClosedPar, 1),
                (b',', _) => (Token::Comma, 1),
                (b'>', _) => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            pos += len;
            token
        } else {
            while pos < bytes.len() && !is_special_symbol(bytes[pos]) && !is_whitespace(bytes[pos])
            {
                pos += 1;
            }
            match &input[start..pos] {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            }
        };
        items.push(Item {
            token,
            literal: &input[start..pos],
            position: start,
        });
    }
}

struct Parser<'a> {
    items: Vec<Item<'a>>,
    next: usize,
}

/// Builds a syntax error, optionally inside a requirement (where Kubernetes prefixes
/// `unable to parse requirement: `).
fn syntax(item: Item<'_>, in_requirement: bool, expected: &str) -> SelectorError {
    let prefix = if in_requirement {
        "unable to parse requirement: "
    } else {
        ""
    };
    SelectorError::Syntax {
        message: format!("{prefix}found '{}', expected: {expected}", item.literal),
        position: item.position,
    }
}

impl<'a> Parser<'a> {
    fn item(&self, index: usize, context: Context) -> Item<'a> {
        // `lex` always ends with EndOfString and the parser never reads past it.
        let mut item = self.items[index.min(self.items.len() - 1)];
        if context == Context::Values && matches!(item.token, Token::In | Token::NotIn) {
            item.token = Token::Identifier;
        }
        item
    }

    fn lookahead(&self, context: Context) -> Item<'a> {
        self.item(self.next, context)
    }

    fn consume(&mut self, context: Context) -> Item<'a> {
        let item = self.item(self.next, context);
        if self.next < self.items.len() - 1 {
            self.next += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let item = self.lookahead(Context::Values);
            match item.token {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(self.parse_requirement()?);
                    let after = self.consume(Context::Values);
                    match after.token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let next = self.lookahead(Context::Values);
                            if !matches!(next.token, Token::Identifier | Token::DoesNotExist) {
                                return Err(syntax(next, false, "identifier after ','"));
                            }
                        }
                        _ => return Err(syntax(after, false, "',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => return Err(syntax(item, false, "!, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, operator) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = operator {
            return Requirement::new(key, op, Vec::<String>::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, operator, values)
    }

    /// Reads `key` or `!key`; infers exists/does-not-exist when no operator follows.
    fn parse_key_and_infer_operator(
        &mut self,
    ) -> Result<(&'a str, Option<Operator>), SelectorError> {
        let mut operator = None;
        let mut item = self.consume(Context::Values);
        if item.token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            item = self.consume(Context::Values);
        }
        if item.token != Token::Identifier {
            return Err(syntax(item, true, "identifier"));
        }
        validate_key(item.literal)?;
        let next = self.lookahead(Context::Values);
        if matches!(next.token, Token::EndOfString | Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((item.literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let item = self.consume(Context::KeyAndOperator);
        Ok(match item.token {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            _ => return Err(syntax(item, true, "in, notin, =, ==, !=, gt, lt")),
        })
    }

    /// Reads `(a,b,...)`. Empty entries (`()`, `(,a)`, `(a,)`) stand for the empty value, as
    /// in Kubernetes.
    fn parse_values(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let open = self.consume(Context::Values);
        if open.token != Token::OpenPar {
            return Err(syntax(open, true, "'('"));
        }
        let first = self.lookahead(Context::Values);
        match first.token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.consume(Context::Values);
                if close.token != Token::ClosedPar {
                    return Err(syntax(close, true, "')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![""])
            }
            _ => Err(syntax(first, true, "',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let mut values = Vec::new();
        loop {
            let item = self.consume(Context::Values);
            match item.token {
                Token::Identifier => {
                    values.push(item.literal);
                    let next = self.lookahead(Context::Values);
                    match next.token {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(syntax(next, true, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(""); // "(,"
                    }
                    let next = self.lookahead(Context::Values);
                    if next.token == Token::ClosedPar {
                        values.push(""); // ",)"
                        return Ok(values);
                    }
                    if next.token == Token::Comma {
                        self.consume(Context::Values);
                        values.push(""); // ",,"
                    }
                }
                _ => return Err(syntax(item, true, "',', or identifier")),
            }
        }
    }

    /// Reads the single value after `=`, `==`, `!=`, `>` or `<`; none means the empty value.
    fn parse_exact_value(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let next = self.lookahead(Context::Values);
        if matches!(next.token, Token::EndOfString | Token::Comma) {
            return Ok(vec![""]);
        }
        let item = self.consume(Context::Values);
        if item.token == Token::Identifier {
            Ok(vec![item.literal])
        } else {
            Err(syntax(item, true, "identifier"))
        }
    }
}

/// Parses a selector string into its requirements, in the order written.
pub(super) fn parse(input: &str) -> Result<Vec<Requirement>, SelectorError> {
    Parser {
        items: lex(input),
        next: 0,
    }
    .parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: &str) -> Vec<(Token, &str)> {
        lex(input).iter().map(|i| (i.token, i.literal)).collect()
    }

    #[test]
    fn lexes_like_kubernetes() {
        assert_eq!(
            tokens("x in (a,b)"),
            vec![
                (Token::Identifier, "x"),
                (Token::In, "in"),
                (Token::OpenPar, "("),
                (Token::Identifier, "a"),
                (Token::Comma, ","),
                (Token::Identifier, "b"),
                (Token::ClosedPar, ")"),
                (Token::EndOfString, ""),
            ]
        );
        assert_eq!(
            tokens("!a!=b==c=d>e<f"),
            vec![
                (Token::DoesNotExist, "!"),
                (Token::Identifier, "a"),
                (Token::NotEquals, "!="),
                (Token::Identifier, "b"),
                (Token::DoubleEquals, "=="),
                (Token::Identifier, "c"),
                (Token::Equals, "="),
                (Token::Identifier, "d"),
                (Token::GreaterThan, ">"),
                (Token::Identifier, "e"),
                (Token::LessThan, "<"),
                (Token::Identifier, "f"),
                (Token::EndOfString, ""),
            ]
        );
        assert_eq!(
            tokens("a===b"),
            vec![
                (Token::Identifier, "a"),
                (Token::DoubleEquals, "=="),
                (Token::Equals, "="),
                (Token::Identifier, "b"),
                (Token::EndOfString, ""),
            ]
        );
    }

    #[test]
    fn positions_point_at_tokens() {
        let items = lex("  a = b");
        assert_eq!(
            items.iter().map(|i| i.position).collect::<Vec<_>>(),
            vec![2, 4, 6, 7]
        );
    }
}
