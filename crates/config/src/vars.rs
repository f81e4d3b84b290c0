//! `$NAME` substitution in the config text, before it is parsed.
//!
//! The original substituted `$MASTER_IP` (the controller's address, known only at start) into
//! node IPs and service arguments. torc generalises this: the caller passes a set of variables
//! and every `$NAME` outside a comment is replaced by its value, anywhere in the text.
//!
//! Rules, in order:
//! - `$$` is a literal `$`.
//! - `$NAME` (`[A-Za-z_][A-Za-z0-9_]*`, longest match) with `NAME` among the variables is
//!   replaced by its value.
//! - `$PORT`, `$PORT<n>`, `$IP`, `$DATA_DIR` and `$SECRETS_DIR` are left verbatim: they are
//!   filled in when a task starts, with its assigned ports, its node's address, its service's
//!   data directory and its credential files' directory.
//! - Any other `$NAME` is an error naming the variable, its line and column. An unknown
//!   variable is a typo far more often than it is meant literally (write `$$NAME` for that).
//! - A `$` not followed by a name is kept as is.
//!
//! Substitution is textual and keeps lines intact (values may not contain line breaks), so
//! parse errors still point at the right line; columns are mapped back to the original text
//! with [`Substituted::original_column`].
//!
//! TODO-correctness: comments are recognised per line (`#` after whitespace, outside quotes),
//! so a ` #` inside a block scalar (`|`) or a multi-line quoted string hides what follows it on
//! that line from substitution.

use std::collections::BTreeMap;

/// The text after substitution, with enough bookkeeping to map columns back.
#[derive(Debug)]
pub(crate) struct Substituted {
    pub(crate) text: String,
    edits: Vec<Edit>,
}

/// One replacement: on `line`, `old_len` characters became `new_len` characters starting at
/// (1-based, new-text) column `new_column`.
#[derive(Debug)]
struct Edit {
    line: usize,
    new_column: usize,
    new_len: usize,
    old_len: usize,
}

/// A `$NAME` that is neither a given variable nor a runtime one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UnknownVar {
    pub(crate) name: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Names filled in per task at start time, which the config keeps verbatim.
pub(crate) fn is_runtime_var(name: &str) -> bool {
    name == "IP"
        || name == "DATA_DIR"
        || name == "SECRETS_DIR"
        || name
            .strip_prefix("PORT")
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
}

impl Substituted {
    /// The column in the original text of what is at `column` of `line` in the substituted
    /// text. A column inside a substituted value maps to its `$`.
    pub(crate) fn original_column(&self, line: usize, column: usize) -> usize {
        let mut shift: isize = 0;
        for edit in self.edits.iter().filter(|e| e.line == line) {
            if column >= edit.new_column + edit.new_len {
                shift += edit.old_len as isize - edit.new_len as isize;
            } else if column >= edit.new_column {
                return (edit.new_column as isize + shift).max(1) as usize;
            } else {
                break;
            }
        }
        (column as isize + shift).max(1) as usize
    }
}

pub(crate) fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Substituted, UnknownVar> {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        substitute_line(index + 1, line, vars, &mut out, &mut edits)?;
    }
    Ok(Substituted { text: out, edits })
}

fn substitute_line(
    line_no: usize,
    line: &str,
    vars: &BTreeMap<String, String>,
    out: &mut String,
    edits: &mut Vec<Edit>,
) -> Result<(), UnknownVar> {
    let chars: Vec<char> = line.chars().collect();
    // The quote that opened the scalar we are in, if any.
    let mut quote: Option<char> = None;
    // The last non-blank character outside quotes: a quote only opens a scalar where one can
    // start (after `:`, `-`, `[`, `{`, `,`, `?` or at the start of the line), so the
    // apostrophe in `it's` is not mistaken for one.
    let mut last_significant: Option<char> = None;
    // Columns (0-based, in characters) reached in the output line.
    let mut new_column = 0;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let prev = i.checked_sub(1).and_then(|p| chars.get(p)).copied();
        let next = chars.get(i + 1).copied();

        if quote.is_none() && c == '#' && prev.is_none_or(char::is_whitespace) {
            // A comment: the rest of the line is copied verbatim.
            chars[i..].iter().for_each(|&c| out.push(c));
            return Ok(());
        }

        if c == '$' {
            if next == Some('$') {
                out.push('$');
                edits.push(Edit {
                    line: line_no,
                    new_column: new_column + 1,
                    new_len: 1,
                    old_len: 2,
                });
                new_column += 1;
                i += 2;
                continue;
            }
            if next.is_some_and(|n| n == '_' || n.is_ascii_alphabetic()) {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&n| !(n == '_' || n.is_ascii_alphanumeric()))
                    .map_or(chars.len(), |len| start + len);
                let name: String = chars[start..end].iter().collect();
                if let Some(value) = vars.get(&name) {
                    out.push_str(value);
                    let new_len = value.chars().count();
                    edits.push(Edit {
                        line: line_no,
                        new_column: new_column + 1,
                        new_len,
                        old_len: end - i,
                    });
                    new_column += new_len;
                } else if is_runtime_var(&name) {
                    chars[i..end].iter().for_each(|&c| out.push(c));
                    new_column += end - i;
                } else {
                    return Err(UnknownVar {
                        name,
                        line: line_no,
                        column: i + 1,
                    });
                }
                last_significant = chars.get(end - 1).copied();
                i = end;
                continue;
            }
        }

        match quote {
            Some('"') if c == '\\' => {
                // An escape: copy it and the escaped character untouched.
                out.push(c);
                new_column += 1;
                if let Some(n) = next {
                    out.push(n);
                    new_column += 1;
                }
                i += 2;
                continue;
            }
            Some('\'') if c == '\'' && next == Some('\'') => {
                // `''` is an escaped quote inside a single-quoted scalar.
                out.push_str("''");
                new_column += 2;
                i += 2;
                continue;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => {
                if (c == '"' || c == '\'')
                    && last_significant
                        .is_none_or(|s| matches!(s, ':' | '-' | '[' | '{' | ',' | '?'))
                {
                    quote = Some(c);
                }
            }
        }
        if quote.is_none() && !c.is_whitespace() {
            last_significant = Some(c);
        }
        out.push(c);
        new_column += 1;
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([("MASTER_IP".to_string(), "10.250.3.20".to_string())])
    }

    #[test]
    fn substitutes_known_vars_everywhere_but_comments() {
        let text = "ip: $MASTER_IP # the $MASTER_IP, or $UNKNOWN\n\
                    args: [\"--etcd\", \"http://$MASTER_IP:2379\"]\n\
                    x: '$MASTER_IP'\n";
        let out = substitute(text, &vars()).unwrap();
        assert_eq!(
            out.text,
            "ip: 10.250.3.20 # the $MASTER_IP, or $UNKNOWN\n\
             args: [\"--etcd\", \"http://10.250.3.20:2379\"]\n\
             x: '10.250.3.20'\n"
        );
    }

    #[test]
    fn keeps_runtime_vars_and_escapes() {
        let text = "a: $PORT $PORT0 $PORT12 $IP $$HOME $5 $ {x}\n";
        let out = substitute(text, &vars()).unwrap();
        assert_eq!(out.text, "a: $PORT $PORT0 $PORT12 $IP $HOME $5 $ {x}\n");
    }

    #[test]
    fn unknown_var_is_located() {
        let err = substitute("a: 1\nb: x-$MASTER_IPX\n", &vars()).unwrap_err();
        assert_eq!(
            err,
            UnknownVar {
                name: "MASTER_IPX".into(),
                line: 2,
                column: 6
            }
        );
        // `$PORTX` is not a runtime variable.
        assert!(substitute("a: $PORTX\n", &vars()).is_err());
    }

    #[test]
    fn hash_inside_quotes_or_words_is_not_a_comment() {
        assert!(substitute("a: \"x #$NOPE\"\n", &vars()).is_err());
        assert!(substitute("a: x#$NOPE\n", &vars()).is_err());
        assert!(substitute("a: it's #$NOPE\n", &vars()).is_ok());
    }

    #[test]
    fn columns_map_back() {
        let out = substitute("ip: $MASTER_IP, x: $$, y\n", &vars()).unwrap();
        assert_eq!(out.text, "ip: 10.250.3.20, x: $, y\n");
        // Before the substitution: unchanged.
        assert_eq!(out.original_column(1, 2), 2);
        // Inside the value: its `$`.
        assert_eq!(out.original_column(1, 8), 5);
        // After it: shifted by the difference in length (10 chars `$MASTER_IP` → 11).
        assert_eq!(out.original_column(1, 17), 16);
        // After the `$$` → `$` too.
        assert_eq!(out.original_column(1, 24), 24);
        // Other lines are untouched.
        assert_eq!(out.original_column(2, 8), 8);
    }
}
