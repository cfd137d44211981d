//! The queue's storage format and the pure rules over it: how an entry is encoded, which
//! entries make the next transaction, and how long a failing destination waits.
//!
//! `outgoing_queue` key: `destination 0xFF sequence` (8 bytes, big-endian, so a
//! destination's entries iterate in the order they were queued). Value: `p event_id 0xFF
//! json` for a PDU, `e json` for an EDU; the JSON is already in the form it is sent in.

use std::time::Duration;

use ruma::{OwnedEventId, OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue as RawJsonValue;

use crate::database::key::{self, SEP};

/// The spec's limits for one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;

/// One queued item, as it will be sent.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Pdu {
        event_id: OwnedEventId,
        json: Box<RawJsonValue>,
    },
    Edu(Box<RawJsonValue>),
}

/// A queue entry: its sequence number (unique across all destinations) and the item.
#[derive(Clone, Debug)]
pub struct Queued {
    pub seq: u64,
    pub item: Outgoing,
}

/// The next transaction to a destination: a run of the queue, oldest first.
#[derive(Clone, Debug, Default)]
pub struct OutgoingTransaction {
    /// `{first}-{last}` sequence numbers: the same entries always make the same id (a
    /// retry after a lost answer is recognised by the receiver), and no other run of
    /// entries can have it, since sequences are never reused.
    pub txn_id: String,
    pub pdus: Vec<(OwnedEventId, Box<RawJsonValue>)>,
    pub edus: Vec<Box<RawJsonValue>>,
    /// Every entry the transaction covers, undecodable ones included, so a success
    /// removes them all.
    pub seqs: Vec<u64>,
}

impl OutgoingTransaction {
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// The longest run of entries from the front of the queue that fits the limits. A run
/// (rather than picking EDUs past a full set of PDUs) keeps the order in which things
/// were queued and makes the transaction id a range.
pub fn take_transaction(
    entries: impl Iterator<Item = (u64, Option<Outgoing>)>,
) -> OutgoingTransaction {
    let mut txn = OutgoingTransaction::default();
    for (seq, item) in entries {
        match item {
            Some(Outgoing::Pdu { event_id, json }) => {
                if txn.pdus.len() == MAX_PDUS {
                    break;
                }
                txn.pdus.push((event_id, json));
            }
            Some(Outgoing::Edu(json)) => {
                if txn.edus.len() == MAX_EDUS {
                    break;
                }
                txn.edus.push(json);
            }
            None => {}
        }
        txn.seqs.push(seq);
    }
    if let (Some(first), Some(last)) = (txn.seqs.first(), txn.seqs.last()) {
        txn.txn_id = format!("{first}-{last}");
    }
    txn
}

pub fn queue_key(destination: &ServerName, seq: u64) -> Vec<u8> {
    key::key(&[destination.as_bytes(), &seq.to_be_bytes()])
}

pub fn queue_prefix(destination: &ServerName) -> Vec<u8> {
    key::prefix(&[destination.as_bytes()])
}

pub fn seq_of(key: &[u8]) -> u64 {
    key::to_u64(&key[key.len().saturating_sub(8)..])
}

/// The destination part of a queue key (the sequence may contain 0xFF, the name cannot).
pub fn destination_of(key: &[u8]) -> Option<OwnedServerName> {
    let name = key.split(|b| *b == SEP).next()?;
    ServerName::parse(std::str::from_utf8(name).ok()?).ok()
}

/// A key after every key of `destination`, to skip to the next destination.
pub fn after_destination(destination: &ServerName) -> Vec<u8> {
    let mut k = destination.as_bytes().to_vec();
    k.extend_from_slice(&[SEP; 10]);
    k
}

pub fn encode_pdu(event_id: &str, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(event_id.len() + json.len() + 2);
    out.push(b'p');
    out.extend_from_slice(event_id.as_bytes());
    out.push(SEP);
    out.extend_from_slice(json);
    out
}

pub fn encode_edu(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 1);
    out.push(b'e');
    out.extend_from_slice(json);
    out
}

pub fn decode(value: &[u8]) -> Option<Outgoing> {
    let (kind, rest) = value.split_first()?;
    let raw =
        |bytes: &[u8]| RawJsonValue::from_string(String::from_utf8(bytes.to_vec()).ok()?).ok();
    match kind {
        b'p' => {
            let sep = rest.iter().position(|b| *b == SEP)?;
            let event_id = OwnedEventId::try_from(std::str::from_utf8(&rest[..sep]).ok()?).ok()?;
            Some(Outgoing::Pdu {
                event_id,
                json: raw(&rest[sep + 1..])?,
            })
        }
        b'e' => Some(Outgoing::Edu(raw(rest)?)),
        _ => None,
    }
}

/// A destination's failures in a row, kept in `outgoing_state` so a restart does not
/// hammer a server that is down.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Backoff {
    pub failures: u32,
    /// The wait chosen after the last failure.
    pub delay_ms: u64,
    /// When the next attempt may start (ms since the epoch).
    pub retry_at_ms: u64,
}

/// The wait after `failures` failures in a row: `base` doubling per failure up to `max`,
/// less up to a quarter at random (`jitter` in [0, 1)) so that destinations that failed
/// together do not retry in lockstep.
pub fn retry_delay(base: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    full.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdu(n: u64) -> (u64, Option<Outgoing>) {
        (
            n,
            Some(Outgoing::Pdu {
                event_id: OwnedEventId::try_from(format!("$e{n}")).unwrap(),
                json: RawJsonValue::from_string("{}".to_owned()).unwrap(),
            }),
        )
    }

    fn edu(n: u64) -> (u64, Option<Outgoing>) {
        (
            n,
            Some(Outgoing::Edu(
                RawJsonValue::from_string("{}".to_owned()).unwrap(),
            )),
        )
    }

    #[test]
    fn a_transaction_is_a_run_within_the_limits() {
        let entries: Vec<_> = (1..=120).map(pdu).collect();
        let txn = take_transaction(entries.into_iter());
        assert_eq!(txn.pdus.len(), MAX_PDUS);
        assert_eq!(txn.seqs, (1..=50).collect::<Vec<_>>());
        assert_eq!(txn.txn_id, "1-50");

        // EDUs fill up beside PDUs; the run stops at the first entry that does not fit.
        let entries: Vec<_> = (1..=150).map(edu).chain((151..=160).map(pdu)).collect();
        let txn = take_transaction(entries.into_iter());
        assert_eq!((txn.pdus.len(), txn.edus.len()), (0, MAX_EDUS));
        assert_eq!(txn.txn_id, "1-100");

        let entries: Vec<_> = (1..=30)
            .map(pdu)
            .chain((31..=200).map(edu))
            .chain((201..=260).map(pdu))
            .collect();
        let txn = take_transaction(entries.into_iter());
        assert_eq!((txn.pdus.len(), txn.edus.len()), (30, 100));
        assert_eq!(txn.txn_id, "1-130");

        // Undecodable entries ride along so that they are removed, not resent forever.
        let txn = take_transaction([(7, None), pdu(8)].into_iter());
        assert_eq!((txn.seqs.len(), txn.pdus.len()), (2, 1));
        assert!(take_transaction(std::iter::empty()).is_empty());
    }

    #[test]
    fn entries_round_trip() {
        let v = encode_pdu("$abc", br#"{"type":"m.room.message"}"#);
        match decode(&v) {
            Some(Outgoing::Pdu { event_id, json }) => {
                assert_eq!(event_id, "$abc");
                assert_eq!(json.get(), r#"{"type":"m.room.message"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(&encode_edu(b"{}")), Some(Outgoing::Edu(_))));
        assert!(decode(b"x{}").is_none());
        assert!(decode(b"e{").is_none());

        let name = ServerName::parse("example.org").unwrap();
        let k = queue_key(&name, 0x00FF_FF00_0000_00FF);
        assert_eq!(seq_of(&k), 0x00FF_FF00_0000_00FF);
        assert_eq!(destination_of(&k).as_deref(), Some(&*name));
        assert!(after_destination(&name).as_slice() > k.as_slice());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        let d: Vec<_> = (1..=12).map(|n| retry_delay(base, max, n, 0.0)).collect();
        assert_eq!(d[0], base);
        assert_eq!(d[1], Duration::from_secs(10));
        assert_eq!(d[2], Duration::from_secs(20));
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(d[11], max);
        assert_eq!(retry_delay(base, max, u32::MAX, 0.0), max);
        let jittered = retry_delay(base, max, 3, 0.999);
        assert!(jittered > Duration::from_secs(15) && jittered <= Duration::from_secs(20));
    }
}
