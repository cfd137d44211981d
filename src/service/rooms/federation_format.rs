//! The form in which an event leaves this server over federation. Stored PDUs carry an
//! `event_id` for every room version and local `unsigned` bookkeeping (`replaces_state`,
//! `prev_content`, `redacted_because`); peers get neither, except the `event_id` of room
//! versions 1 and 2, where it is part of the signed event. Every path that hands a PDU to
//! another server (serving and sending) goes through here, so they agree byte for byte.

use ruma::{
    CanonicalJsonObject, EventId, RoomVersionId,
    canonical_json::redact_in_place,
    room_version_rules::{EventIdFormatVersion, RoomVersionRules},
};
use serde_json::value::{RawValue as RawJsonValue, to_raw_value};

use super::Rooms;
use crate::error::{Error, Result};

/// Turns a stored PDU object into its federation form, in place.
///
/// `unsigned` is dropped whole: what it holds here describes this server's view (previous
/// state, the redacting event), which a peer must not take as part of the event. The spec's
/// only federation field, `age`, is optional, and Synapse ignores it on receipt.
pub fn to_federation_format(object: &mut CanonicalJsonObject, rules: &RoomVersionRules) {
    object.remove("unsigned");
    // From room version 3 the id is the reference hash, computed by whoever needs it.
    if !matches!(rules.event_id_format, EventIdFormatVersion::V1) {
        object.remove("event_id");
    }
}

pub(super) fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules> {
    version
        .rules()
        .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))
}

fn to_raw(object: &CanonicalJsonObject) -> Result<Box<RawJsonValue>> {
    to_raw_value(object).map_err(Error::internal)
}

impl Rooms {
    /// The event with `event_id` as peers receive it, or `None` if it is unknown here.
    pub fn pdu_for_federation(&self, event_id: &EventId) -> Result<Option<Box<RawJsonValue>>> {
        self.federation_object(event_id, false)?
            .map(|object| to_raw(&object))
            .transpose()
    }

    /// Like [`Rooms::pdu_for_federation`], pruned by the room version's redaction
    /// algorithm: for a peer that may know the event exists (it links the graph) but may
    /// not see its content. Hashes and signatures stay, so the peer can still verify it.
    pub fn redacted_pdu_for_federation(
        &self,
        event_id: &EventId,
    ) -> Result<Option<Box<RawJsonValue>>> {
        self.federation_object(event_id, true)?
            .map(|object| to_raw(&object))
            .transpose()
    }

    /// The federation form of a stored PDU object (as `get_pdu_json` returns it), for
    /// callers that already hold the object, such as the sending queue.
    pub fn federation_json(
        &self,
        mut object: CanonicalJsonObject,
        version: &RoomVersionId,
    ) -> Result<Box<RawJsonValue>> {
        to_federation_format(&mut object, &rules_of(version)?);
        to_raw(&object)
    }

    fn federation_object(
        &self,
        event_id: &EventId,
        redact: bool,
    ) -> Result<Option<CanonicalJsonObject>> {
        let Some(pdu) = self.get_pdu(event_id)? else {
            return Ok(None);
        };
        let Some(mut object) = self.get_pdu_json(event_id)? else {
            return Ok(None);
        };
        let version = self
            .room_version(&pdu.room_id)?
            .ok_or_else(|| Error::internal(format_args!("no room version for {event_id}")))?;
        let rules = rules_of(&version)?;
        if redact {
            redact_in_place(&mut object, &rules.redaction, None).map_err(Error::internal)?;
        }
        to_federation_format(&mut object, &rules);
        Ok(Some(object))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{CanonicalJsonObject, RoomVersionId};

    use super::{rules_of, to_federation_format};

    fn formatted(stored: &str, version: RoomVersionId) -> serde_json::Value {
        let mut object: CanonicalJsonObject = serde_json::from_str(stored).unwrap();
        to_federation_format(&mut object, &rules_of(&version).unwrap());
        serde_json::to_value(&object).unwrap()
    }

    #[test]
    fn federation_form_drops_unsigned_and_hash_ids() {
        let out = formatted(
            r#"{"event_id":"$hash","type":"t","unsigned":{"prev_content":{}}}"#,
            RoomVersionId::V12,
        );
        assert_eq!(out, serde_json::json!({"type": "t"}));
        let out = formatted(
            r#"{"event_id":"$abc:example.org","type":"t"}"#,
            RoomVersionId::V1,
        );
        assert_eq!(out["event_id"], "$abc:example.org");
    }
}
