//! Fuzz target `controller-etcd-key`: bytes as an etcd key through `Layout::parse` (the keys a
//! controller reads back from etcd), on the stable toolchain (the driver is `torc-fuzz`;
//! `scripts/fuzz controller-etcd-key 300` runs it for as long as asked). The first byte picks
//! whether the rest is put under the layout's prefix, so most inputs reach the parser's inner
//! checks. The checks: parsing never panics; a key that parses is the one spelling `key`
//! makes of what it parsed to (so two etcd keys never name one record); a refusal names the
//! key it refused.

use torc_controller::layout::{Layout, LayoutError};
use torc_fuzz::{Outcome, Target, Violation};

const PREFIX: &str = "/torc-controller/rack1/";

const TARGETS: &[Target] = &[Target {
    name: "controller-etcd-key",
    run: run_key,
    dictionary: &[
        b"format",
        b"config",
        b"tasks/",
        b"nodes/",
        b"secrets/",
        b"meta/",
        b"meta/writer",
        b"election/",
        b"members/",
        b"694d7e1a2b3c0001",
        b"%2F",
        b"%2f",
        b"%25",
        b"%20",
        b"%41",
        b"%C3%A9",
        b"%FF",
        b"/",
        b"%",
        b"/torc-controller/",
    ],
    ci_inputs: 3_000,
    crate_dir: env!("CARGO_MANIFEST_DIR"),
}];

fn run_key(data: &[u8]) -> Outcome {
    let layout = Layout::new(PREFIX).map_err(Violation::new)?;
    let Some((&first, rest)) = data.split_first() else {
        return Ok("no input".into());
    };
    let raw: Vec<u8> = if first & 1 == 0 {
        [PREFIX.as_bytes(), rest].concat()
    } else {
        rest.to_vec()
    };
    match layout.parse(&raw) {
        Ok(key) => {
            let again = layout.key(&key);
            if again.as_bytes() != raw.as_slice() {
                return Err(Violation::new(format!(
                    "{:?} parsed to {key:?}, which is spelt {again:?}",
                    String::from_utf8_lossy(&raw)
                )));
            }
            let kind = format!("{key:?}");
            Ok(format!("ok {}", kind.split('(').next().unwrap_or_default()).into())
        }
        Err(e) => {
            let text = e.to_string();
            if !text.contains(&format!("{:?}", String::from_utf8_lossy(&raw))) {
                return Err(Violation::new(format!(
                    "the refusal does not name the key: {text}"
                )));
            }
            // The kind of refusal, in a few words without the key.
            Ok(match e {
                LayoutError::Unknown { why, .. } => {
                    // The name it quotes left out: from the first quote to the last.
                    let unquoted = match (why.find('"'), why.rfind('"')) {
                        (Some(a), Some(b)) => format!("{}{}", &why[..a], &why[b + 1..]),
                        _ => why,
                    };
                    let words: Vec<&str> = unquoted.split_whitespace().take(5).collect();
                    format!("err {}", words.join(" "))
                }
                other => format!(
                    "err {}",
                    other
                        .to_string()
                        .split_whitespace()
                        .take(1)
                        .collect::<String>()
                ),
            }
            .into())
        }
    }
}

#[test]
fn controller_etcd_key() {
    torc_fuzz::ci_run(TARGETS, "controller-etcd-key", 0x5eed_0e7c, 6);
}

/// The long run `scripts/fuzz` starts (see `torc_fuzz::long_run`).
#[test]
#[ignore = "run by scripts/fuzz"]
fn long_run() {
    torc_fuzz::long_run(TARGETS);
}
