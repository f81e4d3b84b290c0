//! Why zone-file text, a name or a snapshot record could not be read: each cause a variant
//! with the text and numbers involved. The messages are the ones operators see in logs and
//! the ones the tests pin; bind9's words are not copied (its errors differ anyway).

use hickory_proto::ProtoError;

use torc_api::dns::shown;

/// The longest label and the longest name, in bytes (RFC 1035 §2.3.4; a name's length is its wire
/// form's: each label with its length byte, and the root's zero byte).
pub(crate) const MAX_LABEL: usize = 63;
pub(crate) const MAX_NAME: usize = 255;

/// A zone file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Something wrong on one line (line 0: the origin given with the file).
    #[error("{file}:{line}: {problem}")]
    Syntax {
        file: String,
        line: usize,
        problem: LineProblem,
    },
    /// Something wrong with the zone as a whole.
    #[error("{file}: {problem}")]
    Zone { file: String, problem: ZoneProblem },
}

/// What is wrong with a zone as a whole. (Names in errors are text, absolute and lowercased:
/// a hickory `Name` is five times the size, and errors travel in every `Result`.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneProblem {
    #[error("no records and no origin")]
    NoApex,
    #[error("no SOA record for {apex}")]
    NoSoa { apex: String },
}

/// What is wrong on one line of a zone file, or in one record of a snapshot.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LineProblem {
    #[error("')' without '('")]
    CloseWithoutOpen,
    #[error("'(' is never closed")]
    NeverClosed,
    #[error("unterminated string")]
    UnterminatedString,
    #[error("\\DDD escape needs three digits")]
    ShortEscape,
    #[error("escape \\{value} is above 255")]
    EscapeAbove255 { value: u32 },
    /// The origin given with the file (`--zone-file ORIGIN=PATH`) is not a name.
    #[error("origin {origin:?}: {name}")]
    Origin { origin: String, name: BadName },
    #[error(transparent)]
    Name(#[from] BadName),
    #[error("relative name {name:?} but no $ORIGIN")]
    RelativeWithoutOrigin { name: String },
    #[error("a record without an owner name, and no previous owner")]
    NoOwner,
    #[error("missing owner")]
    MissingOwner,
    #[error("class {class:?} is not supported, only IN")]
    Class { class: String },
    #[error("missing record type")]
    MissingType,
    #[error("no TTL: add one to the record or set $TTL")]
    NoTtl,
    #[error("{directive} needs an argument")]
    DirectiveArgument { directive: String },
    #[error("bad TTL {text:?}")]
    BadTtl { text: String },
    #[error("$INCLUDE is not supported; merge the files")]
    Include,
    #[error("unknown directive {}", shown(directive))]
    UnknownDirective { directive: String },
    #[error("record type {rtype:?} is not supported (A, AAAA, CNAME, MX, NS, TXT, SRV, PTR, SOA)")]
    UnsupportedType { rtype: String },
    #[error("{rtype} needs {want} field{}, found {found}", if *want == 1 { "" } else { "s" })]
    FieldCount {
        rtype: String,
        want: usize,
        found: usize,
    },
    /// A number or timer field of a record (`MX preference`, `SOA serial`, `SOA refresh`).
    #[error("bad {rtype} {field} {text:?}")]
    BadField {
        rtype: String,
        field: &'static str,
        text: String,
    },
    #[error("bad IPv4 address {text:?}")]
    BadIpv4 { text: String },
    #[error("bad IPv6 address {text:?}")]
    BadIpv6 { text: String },
    #[error("TXT needs at least one string")]
    EmptyTxt,
    #[error("TXT string of {len} bytes; the limit is 255")]
    LongTxtString { len: usize },
    /// An SOA timer above `i32::MAX` seconds, which the record cannot hold.
    #[error("SOA {field} too large")]
    SoaTimerTooLarge { field: &'static str },
    #[error("the SOA must be owned by the apex {apex}")]
    SoaNotAtApex { apex: String },
    #[error("a second SOA record")]
    SecondSoa,
    #[error("{name} is outside the zone {apex}")]
    OutsideZone { name: String, apex: String },
    #[error("{name} has a CNAME and other data")]
    CnameAndOtherData { name: String },
    #[error("$GENERATE needs RANGE LHS [TTL] [CLASS] TYPE RHS")]
    GenerateArguments,
    #[error(
        "bad $GENERATE range {text:?}: want START-STOP or START-STOP/STEP, numbers below 2^31, \
         START <= STOP, STEP >= 1"
    )]
    GenerateRange { text: String },
    /// A `${...}` in a `$GENERATE` template that cannot be read.
    #[error("bad $GENERATE modifier in {}: {why}", shown(text))]
    GenerateModifier { text: String, why: &'static str },
    /// A value an offset made negative, for a base other than decimal.
    #[error("$GENERATE value {value} is negative; only base d writes negative values, not {}", char::from(*base))]
    GenerateNegative { value: i64, base: u8 },
    #[error(
        "text after the $GENERATE RHS: {} (quote an RHS with blanks)",
        shown(text)
    )]
    GenerateExtra { text: String },
    #[error("$GENERATE would make {count} records in this file; at most {limit} are allowed")]
    GenerateTooMany { count: u64, limit: u64 },
    /// A record that a `$GENERATE` line made for `value` is wrong.
    #[error("$GENERATE, for {value}: {problem}")]
    Generated {
        value: u32,
        problem: Box<LineProblem>,
    },
    /// A snapshot record's text held no record or several.
    #[error("expected exactly one record")]
    NotOneRecord,
}

/// Text that is not a DNS name, and why. `text` is the whole name as written (cut to 60
/// characters in the message).
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad name {}: {fault}", shown(text))]
pub struct BadName {
    pub text: String,
    pub fault: NameFault,
}

/// The rule a name breaks.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NameFault {
    #[error("an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    /// Label `index` (1-based) is `len` bytes long.
    #[error("label {index} is {len} bytes long; a label is at most {MAX_LABEL} bytes")]
    LongLabel { index: usize, len: usize },
    /// `len` bytes in wire form.
    #[error("{len} bytes long; a name is at most {MAX_NAME} bytes")]
    LongName { len: usize },
    #[error(
        "{0:?} is not allowed in a name (letters, digits, '-' and '_' are; write other bytes as \
         \\DDD)"
    )]
    Character(char),
    /// A snapshot's node or service name must be one label.
    #[error("a label must be 1 to {MAX_LABEL} bytes long, not {len}")]
    LabelLength { len: usize },
    #[error("only letters, digits, '-' and '_' are allowed")]
    LabelCharacters,
    /// What hickory-proto said, when none of the rules above explains it. (Boxed: it is large,
    /// and rare.)
    #[error(transparent)]
    Proto(Box<ProtoError>),
}
