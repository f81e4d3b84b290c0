//! RFC 1035 master ("zone") files, so an operator can move a bind9 zone over unchanged.
//!
//! Supported: `$ORIGIN`, `$TTL` (with `s/m/h/d/w` units), relative names, `@`, an omitted owner
//! (the previous one), TTL and class in either order, parentheses spanning lines, `;` comments,
//! quoted strings with `\"` and `\DDD` escapes, bind9's `$GENERATE` (`zonefile/generate.rs`,
//! at most 65,536 generated records per file), and the types A, AAAA, CNAME, MX, NS, TXT, SRV,
//! PTR and SOA. Owners may be wildcards (`*.dyn`; `catalog.rs` answers them per RFC 4592).
//! Not supported (rejected with an error, never skipped): `$INCLUDE`, classes other
//! than IN, other record types.
//!
//! Invariants of a parsed [`StaticZone`]:
//! - exactly one SOA, owned by the apex; every record lies at or below the apex;
//! - all names are lowercased and absolute;
//! - a name holding a CNAME holds nothing else (RFC 1034 §3.6.2).
//!
//! Every error names the file, the line and what is wrong: a [`LineProblem`] or [`ZoneProblem`]
//! carrying the text and numbers involved (see `zonefile/error.rs`).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use hickory_proto::{
    ProtoError,
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT},
    },
};

use crate::key::{Key, key_of};
/// How names are shown in error messages (cut to 60 characters): the snapshot's own rule, so a
/// name reads the same in every DNS error.
pub(crate) use torc_api::dns::cut;

mod error;
mod generate;

pub use error::{BadName, LineProblem, NameFault, ZoneError, ZoneProblem};
pub(crate) use error::{MAX_LABEL, MAX_NAME};

/// A zone read from a zone file: its apex and its records.
#[derive(Clone, Debug)]
pub struct StaticZone {
    pub(crate) apex: Name,
    pub(crate) records: Vec<Record>,
}

impl StaticZone {
    /// Reads a zone file. `origin` is the zone's name (as in bind's `zone "homer.ave"`); without
    /// it the file must set `$ORIGIN` before its first record.
    pub fn from_file(path: &Path, origin: Option<&str>) -> Result<Self, ZoneError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file, origin)
    }

    /// Parses zone-file text; `file` only labels errors.
    pub fn parse(text: &str, file: &str, origin: Option<&str>) -> Result<Self, ZoneError> {
        let syntax = |line, problem| ZoneError::Syntax {
            file: file.to_owned(),
            line,
            problem,
        };
        let origin = match origin {
            Some(o) => Some(absolute(o).map_err(|name| {
                syntax(
                    0,
                    LineProblem::Origin {
                        origin: o.to_owned(),
                        name,
                    },
                )
            })?),
            None => None,
        };
        let lines = tokenize(text).map_err(|(line, m)| syntax(line, m))?;
        let (apex, records) = Parser::new(origin)
            .run(&lines)
            .map_err(|(line, m)| syntax(line, m))?;
        let zone_error = |problem| ZoneError::Zone {
            file: file.to_owned(),
            problem,
        };
        let apex = apex.ok_or_else(|| zone_error(ZoneProblem::NoApex))?;

        let soas: Vec<_> = records
            .iter()
            .filter(|(_, r)| r.record_type() == RecordType::SOA)
            .collect();
        match soas.as_slice() {
            [] => {
                return Err(zone_error(ZoneProblem::NoSoa {
                    apex: apex.to_string(),
                }));
            }
            [(line, soa)] if soa.name != apex => {
                return Err(syntax(
                    *line,
                    LineProblem::SoaNotAtApex {
                        apex: apex.to_string(),
                    },
                ));
            }
            [_] => {}
            [_, (line, _), ..] => return Err(syntax(*line, LineProblem::SecondSoa)),
        }
        // Per name (case-insensitive): (holds a CNAME, holds other data). One pass, not a
        // comparison of every record with every other: a zone of 10,000 names loads in
        // milliseconds, not seconds.
        let mut kinds: HashMap<Key, (bool, bool)> = HashMap::with_capacity(records.len());
        for (_, record) in &records {
            let kind = kinds.entry(key_of(&record.name)).or_default();
            if record.record_type() == RecordType::CNAME {
                kind.0 = true;
            } else {
                kind.1 = true;
            }
        }
        for (line, record) in &records {
            if !apex.zone_of(&record.name) {
                return Err(syntax(
                    *line,
                    LineProblem::OutsideZone {
                        name: record.name.to_string(),
                        apex: apex.to_string(),
                    },
                ));
            }
            if kinds.get(&key_of(&record.name)) == Some(&(true, true)) {
                return Err(syntax(
                    *line,
                    LineProblem::CnameAndOtherData {
                        name: record.name.to_string(),
                    },
                ));
            }
        }
        Ok(Self {
            apex,
            records: records.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// The zone's apex, e.g. `homer.ave.`.
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// The zone's records, the SOA included.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

/// One logical line: tokens up to an end of line outside parentheses.
struct Line {
    number: usize,
    /// The line began with blank space: the owner is the previous record's.
    indented: bool,
    tokens: Vec<Token>,
}

struct Token {
    text: String,
    /// The token's bytes with escapes resolved (TXT data).
    bytes: Vec<u8>,
    quoted: bool,
    /// A quoted string as written, escapes unresolved (a `$GENERATE` RHS is filled in, then
    /// read as record data); `None` for an unquoted token, whose `text` is as written.
    raw: Option<String>,
}

impl Token {
    /// The token as written, without its quotes.
    fn raw(&self) -> &str {
        self.raw.as_deref().unwrap_or(&self.text)
    }
}

fn tokenize(text: &str) -> Result<Vec<Line>, LineError> {
    let mut lines = Vec::new();
    let mut current: Option<Line> = None;
    let mut depth = 0usize;
    let mut number = 1;
    let mut paren_line = 0;
    let mut line_indented = text.starts_with([' ', '\t']);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                number += 1;
                if depth == 0
                    && let Some(line) = current.take()
                {
                    lines.push(line);
                }
                line_indented = matches!(chars.peek(), Some(' ' | '\t'));
            }
            ';' => while chars.next_if(|&c| c != '\n').is_some() {},
            ' ' | '\t' | '\r' => {}
            '(' => {
                if depth == 0 {
                    paren_line = number;
                }
                depth += 1;
                current.get_or_insert_with(|| new_line(number, line_indented));
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or((number, LineProblem::CloseWithoutOpen))?;
            }
            '"' => {
                let mut bytes = Vec::new();
                let mut raw = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => {
                            return Err((number, LineProblem::UnterminatedString));
                        }
                        Some('"') => break,
                        Some('\\') => push_escape(&mut chars, &mut bytes, &mut raw, number)?,
                        Some(c) => {
                            raw.push(c);
                            bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                    }
                }
                let line = current.get_or_insert_with(|| new_line(number, line_indented));
                line.tokens.push(Token {
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    bytes,
                    quoted: true,
                    raw: Some(raw),
                });
            }
            c => {
                let mut text = String::from(c);
                let mut escaped = c == '\\';
                while let Some(&next) = chars.peek() {
                    if !escaped && (next.is_whitespace() || matches!(next, ';' | '(' | ')' | '"')) {
                        break;
                    }
                    escaped = !escaped && next == '\\';
                    text.push(next);
                    chars.next();
                }
                let line = current.get_or_insert_with(|| new_line(number, line_indented));
                line.tokens.push(Token {
                    bytes: unescape(&text),
                    text,
                    quoted: false,
                    raw: None,
                });
            }
        }
    }
    if depth > 0 {
        return Err((paren_line, LineProblem::NeverClosed));
    }
    lines.extend(current);
    Ok(lines)
}

/// An unquoted token's bytes: `\DDD` and `\X` resolved as in a quoted string (bind9 reads
/// unquoted TXT data so), an incomplete escape kept as written.
fn unescape(text: &str) -> Vec<u8> {
    if !text.contains('\\') {
        return text.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        let mut attempt = chars.clone();
        let (mut bytes, mut raw) = (Vec::new(), String::new());
        if push_escape(&mut attempt, &mut bytes, &mut raw, 0).is_ok() {
            out.extend_from_slice(&bytes);
            chars = attempt;
        } else {
            out.push(b'\\');
        }
    }
    out
}

fn new_line(number: usize, indented: bool) -> Line {
    Line {
        number,
        indented,
        tokens: Vec::new(),
    }
}

/// Resolves the escape after a `\` inside a quoted string: `\DDD` (decimal) or `\X`, into
/// `out`; `raw` gets the escape as written.
fn push_escape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut Vec<u8>,
    raw: &mut String,
    line: usize,
) -> Result<(), LineError> {
    let Some(first) = chars.next() else {
        return Err((line, LineProblem::UnterminatedString));
    };
    raw.push('\\');
    raw.push(first);
    if let Some(d0) = first.to_digit(10) {
        let mut value = d0;
        for _ in 0..2 {
            let c = chars.next();
            raw.extend(c);
            let d = c
                .and_then(|c| c.to_digit(10))
                .ok_or((line, LineProblem::ShortEscape))?;
            value = value * 10 + d;
        }
        let byte =
            u8::try_from(value).map_err(|_| (line, LineProblem::EscapeAbove255 { value }))?;
        out.push(byte);
    } else {
        out.extend_from_slice(first.encode_utf8(&mut [0; 4]).as_bytes());
    }
    Ok(())
}

/// Parses a name that must be absolute (a trailing dot is optional).
pub(crate) fn absolute(text: &str) -> Result<Name, BadName> {
    let mut name = Name::from_ascii(text).map_err(|e| bad_name(text, e))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Says why `text` is not a name: an empty label, a label or a name over the RFC 1035 limits, a
/// character that needs an escape, or else what hickory-proto said. (The diagnosis splits at
/// dots and ignores `\.` escapes, which only changes the cause given for names that use them.)
fn bad_name(text: &str, error: ProtoError) -> BadName {
    let fault = || {
        let labels: Vec<&str> = text.strip_suffix('.').unwrap_or(text).split('.').collect();
        if text != "." && labels.iter().any(|l| l.is_empty()) {
            return NameFault::EmptyLabel;
        }
        if let Some((n, label)) = labels.iter().enumerate().find(|(_, l)| l.len() > MAX_LABEL) {
            return NameFault::LongLabel {
                index: n + 1,
                len: label.len(),
            };
        }
        let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
        if wire > MAX_NAME {
            return NameFault::LongName { len: wire };
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*');
        if !text.contains('\\')
            && let Some(c) = text.chars().find(|&c| !allowed(c))
        {
            return NameFault::Character(c);
        }
        NameFault::Proto(Box::new(error))
    };
    BadName {
        fault: fault(),
        text: text.to_owned(),
    }
}

/// Parses one record written as in a zone file, every name absolute (the origin is the root).
pub(crate) fn parse_record(
    name: &str,
    ttl: u32,
    rtype: &str,
    data: &str,
) -> Result<Record, LineProblem> {
    let owner = absolute(name)?;
    let text = format!("{owner} {ttl} IN {rtype} {data}");
    let lines = tokenize(&text).map_err(|(_, m)| m)?;
    let (_, mut records) = Parser::new(Some(Name::root()))
        .run(&lines)
        .map_err(|(_, m)| m)?;
    match (records.pop(), records.is_empty()) {
        (Some((_, record)), true) => Ok(record),
        _ => Err(LineProblem::NotOneRecord),
    }
}

/// Resolves a zone-file name against `origin`.
fn relative(text: &str, origin: Option<&Name>) -> Result<Name, LineProblem> {
    let Some(origin) = origin else {
        return if text.ends_with('.') {
            Ok(absolute(text)?)
        } else {
            Err(LineProblem::RelativeWithoutOrigin {
                name: text.to_owned(),
            })
        };
    };
    if text == "@" {
        return Ok(origin.clone());
    }
    let name = Name::from_ascii(text).map_err(|e| bad_name(text, e))?;
    if name.is_fqdn() {
        return Ok(name.to_lowercase());
    }
    Ok(name
        .append_domain(origin)
        .map(|n| n.to_lowercase())
        .map_err(|e| bad_name(&format!("{text}.{origin}"), e))?)
}

/// Reads the optional TTL and class of a record, in either order; only class IN is accepted.
fn ttl_and_class<'a>(
    tokens: &mut std::iter::Peekable<impl Iterator<Item = &'a Token>>,
) -> Result<Option<u32>, LineProblem> {
    let mut ttl = None;
    for _ in 0..2 {
        let Some(token) = tokens.peek() else { break };
        if token.text.eq_ignore_ascii_case("IN") {
            tokens.next();
        } else if ["CH", "CS", "HS"]
            .iter()
            .any(|c| token.text.eq_ignore_ascii_case(c))
        {
            return Err(LineProblem::Class {
                class: token.text.clone(),
            });
        } else if let Some(t) = parse_ttl(&token.text) {
            ttl = Some(t);
            tokens.next();
        }
    }
    Ok(ttl)
}

/// Parses a TTL: seconds, or a sum of numbers with `s/m/h/d/w` units (`1h30m`).
pub(crate) fn parse_ttl(text: &str) -> Option<u32> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (mut total, mut number) = (0u64, 0u64);
    let mut pending = false;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            number = number.checked_mul(10)?.checked_add(u64::from(d))?;
            pending = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        if !pending {
            return None;
        }
        total = total.checked_add(number.checked_mul(unit)?)?;
        (number, pending) = (0, false);
    }
    u32::try_from(total.checked_add(number)?).ok()
}

/// A record and the line it was read from.
type NumberedRecord = (usize, Record);
/// A line number and what is wrong on it.
type LineError = (usize, LineProblem);

struct Parser {
    apex: Option<Name>,
    origin: Option<Name>,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
    records: Vec<(usize, Record)>,
    /// Records made by `$GENERATE` lines so far (at most [`generate::MAX_GENERATED`]).
    generated: u64,
}

impl Parser {
    fn new(origin: Option<Name>) -> Self {
        Self {
            apex: origin.clone(),
            origin,
            default_ttl: None,
            last_ttl: None,
            last_owner: None,
            records: Vec::new(),
            generated: 0,
        }
    }

    fn run(mut self, lines: &[Line]) -> Result<(Option<Name>, Vec<NumberedRecord>), LineError> {
        for line in lines {
            self.line(line).map_err(|m| (line.number, m))?;
        }
        Ok((self.apex, self.records))
    }

    fn line(&mut self, line: &Line) -> Result<(), LineProblem> {
        let mut tokens = line.tokens.iter().peekable();
        let Some(first) = tokens.peek() else {
            return Ok(());
        };
        if !first.quoted && first.text.starts_with('$') && !line.indented {
            return self.directive(line);
        }
        let owner = if line.indented {
            self.last_owner.clone().ok_or(LineProblem::NoOwner)?
        } else {
            let token = tokens.next().ok_or(LineProblem::MissingOwner)?;
            relative(&token.text, self.origin.as_ref())?
        };

        let ttl = ttl_and_class(&mut tokens)?;
        let rtype = tokens.next().ok_or(LineProblem::MissingType)?;
        let fields: Vec<&Token> = tokens.collect();
        self.record(line.number, owner, ttl, &rtype.text, &fields)
    }

    /// Adds the record `owner [ttl] IN rtype fields`, read on line `number`.
    fn record(
        &mut self,
        number: usize,
        owner: Name,
        ttl: Option<u32>,
        rtype: &str,
        fields: &[&Token],
    ) -> Result<(), LineProblem> {
        let rtype = rtype.to_ascii_uppercase();
        let rdata = self.rdata(&rtype, fields)?;

        let ttl = match (ttl, self.default_ttl, self.last_ttl) {
            (Some(t), _, _) => t,
            (None, Some(t), _) => t,
            (None, None, Some(t)) => t,
            // RFC 2308: with no $TTL, an SOA's minimum field is a usable default.
            (None, None, None) => match &rdata {
                RData::SOA(soa) => soa.minimum,
                _ => return Err(LineProblem::NoTtl),
            },
        };
        self.last_ttl = Some(ttl);
        if self.apex.is_none() {
            self.apex = self.origin.clone();
        }
        self.last_owner = Some(owner.clone());
        self.records
            .push((number, Record::from_rdata(owner, ttl, rdata)));
        Ok(())
    }

    /// `$GENERATE RANGE LHS [TTL] [CLASS] TYPE RHS` (bind9's): one record per value of the
    /// range, owned by LHS and holding RHS, each with the value written in (`zonefile/generate.rs`
    /// says how). Its records count as read on its line.
    fn generate(&mut self, line: &Line) -> Result<(), LineProblem> {
        let mut tokens = line.tokens[1..].iter().peekable();
        let (Some(range), Some(lhs)) = (tokens.next(), tokens.next()) else {
            return Err(LineProblem::GenerateArguments);
        };
        let range = generate::Range::parse(&range.text)?;
        let ttl = ttl_and_class(&mut tokens)?;
        let (Some(rtype), Some(rhs)) = (tokens.next(), tokens.next()) else {
            return Err(LineProblem::GenerateArguments);
        };
        if let Some(extra) = tokens.next() {
            return Err(LineProblem::GenerateExtra {
                text: extra.text.clone(),
            });
        }
        let count = self.generated + range.count();
        if count > generate::MAX_GENERATED {
            return Err(LineProblem::GenerateTooMany {
                count,
                limit: generate::MAX_GENERATED,
            });
        }
        self.generated = count;
        let lhs = generate::Template::parse(lhs.raw())?;
        let rhs = generate::Template::parse(rhs.raw())?;
        for value in range.values() {
            let at = |problem| LineProblem::Generated {
                value,
                problem: Box::new(problem),
            };
            let owner = relative(&lhs.fill(value)?, self.origin.as_ref()).map_err(at)?;
            // The filled RHS is record data as if written on the line (`"10 mx$"` is two fields).
            let data = tokenize(&rhs.fill(value)?).map_err(|(_, problem)| at(problem))?;
            let fields: Vec<&Token> = data.iter().flat_map(|l| &l.tokens).collect();
            self.record(line.number, owner, ttl, &rtype.text, &fields)
                .map_err(at)?;
        }
        Ok(())
    }

    fn directive(&mut self, line: &Line) -> Result<(), LineProblem> {
        let tokens = &line.tokens;
        let name = tokens[0].text.to_ascii_uppercase();
        let arg = |i: usize| {
            tokens
                .get(i)
                .map(|t| t.text.as_str())
                .ok_or_else(|| LineProblem::DirectiveArgument {
                    directive: name.clone(),
                })
        };
        match name.as_str() {
            "$ORIGIN" => {
                let origin = relative(arg(1)?, self.origin.as_ref())?;
                self.origin = Some(origin);
            }
            "$TTL" => {
                let text = arg(1)?;
                self.default_ttl = Some(parse_ttl(text).ok_or_else(|| LineProblem::BadTtl {
                    text: text.to_owned(),
                })?);
            }
            "$INCLUDE" => return Err(LineProblem::Include),
            "$GENERATE" => return self.generate(line),
            _ => return Err(LineProblem::UnknownDirective { directive: name }),
        }
        Ok(())
    }

    fn rdata(&self, rtype: &str, fields: &[&Token]) -> Result<RData, LineProblem> {
        let want = |n: usize| {
            if fields.len() == n {
                Ok(())
            } else {
                Err(LineProblem::FieldCount {
                    rtype: rtype.to_owned(),
                    want: n,
                    found: fields.len(),
                })
            }
        };
        let name = |i: usize| relative(&fields[i].text, self.origin.as_ref());
        let bad_field = |i: usize, field: &'static str| LineProblem::BadField {
            rtype: rtype.to_owned(),
            field,
            text: fields[i].text.clone(),
        };
        let number = |i: usize, what| {
            fields[i]
                .text
                .parse::<u16>()
                .map_err(|_| bad_field(i, what))
        };
        let timer = |i: usize, what| parse_ttl(&fields[i].text).ok_or_else(|| bad_field(i, what));
        let soa_timer = |i: usize, what| {
            i32::try_from(timer(i, what)?)
                .map_err(|_| LineProblem::SoaTimerTooLarge { field: what })
        };
        Ok(match rtype {
            "A" => {
                want(1)?;
                let ip: Ipv4Addr = fields[0].text.parse().map_err(|_| LineProblem::BadIpv4 {
                    text: fields[0].text.clone(),
                })?;
                RData::A(A(ip))
            }
            "AAAA" => {
                want(1)?;
                let ip: Ipv6Addr = fields[0].text.parse().map_err(|_| LineProblem::BadIpv6 {
                    text: fields[0].text.clone(),
                })?;
                RData::AAAA(AAAA(ip))
            }
            "CNAME" => {
                want(1)?;
                RData::CNAME(CNAME(name(0)?))
            }
            "NS" => {
                want(1)?;
                RData::NS(NS(name(0)?))
            }
            "PTR" => {
                want(1)?;
                RData::PTR(PTR(name(0)?))
            }
            "MX" => {
                want(2)?;
                RData::MX(MX::new(number(0, "preference")?, name(1)?))
            }
            "SRV" => {
                want(4)?;
                RData::SRV(SRV::new(
                    number(0, "priority")?,
                    number(1, "weight")?,
                    number(2, "port")?,
                    name(3)?,
                ))
            }
            "TXT" => {
                if fields.is_empty() {
                    return Err(LineProblem::EmptyTxt);
                }
                if let Some(long) = fields.iter().find(|f| f.bytes.len() > 255) {
                    return Err(LineProblem::LongTxtString {
                        len: long.bytes.len(),
                    });
                }
                RData::TXT(TXT::from_bytes(
                    fields.iter().map(|f| f.bytes.as_slice()).collect(),
                ))
            }
            "SOA" => {
                want(7)?;
                let serial = fields[2]
                    .text
                    .parse::<u32>()
                    .map_err(|_| bad_field(2, "serial"))?;
                RData::SOA(SOA::new(
                    name(0)?,
                    name(1)?,
                    serial,
                    soa_timer(3, "refresh")?,
                    soa_timer(4, "retry")?,
                    soa_timer(5, "expire")?,
                    timer(6, "minimum")?,
                ))
            }
            other => {
                return Err(LineProblem::UnsupportedType {
                    rtype: other.to_owned(),
                });
            }
        })
    }
}

#[cfg(test)]
mod tests;
