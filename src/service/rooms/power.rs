//! Power levels as the room version defines them (room creators are privileged in v12).

use ruma::{
    OwnedUserId, RoomId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent},
    },
};
use serde::Deserialize;

use super::{Rooms, state::StateMap};
use crate::error::{Error, Result};

impl Rooms {
    /// The room's creators: the create event's sender, plus `additional_creators` where the
    /// room version has them.
    pub fn creators(&self, state: &StateMap) -> Result<Vec<OwnedUserId>> {
        let Some(create) = self.state_get(state, &StateEventType::RoomCreate, "")? else {
            return Ok(vec![]);
        };
        #[derive(Deserialize)]
        struct Content {
            #[serde(default)]
            additional_creators: Vec<OwnedUserId>,
        }
        let mut creators = vec![create.sender.clone()];
        if let Some(content) = create.content_json::<Content>() {
            creators.extend(content.additional_creators);
        }
        Ok(creators)
    }

    pub fn power_levels_at(&self, room_id: &RoomId, state: &StateMap) -> Result<RoomPowerLevels> {
        let version = self
            .room_version(room_id)?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = version
            .rules()
            .ok_or_else(|| Error::unsupported_room_version("Unsupported room version"))?;
        let content = self
            .state_get(state, &StateEventType::RoomPowerLevels, "")?
            .and_then(|pdu| pdu.content_json::<RoomPowerLevelsEventContent>());
        Ok(RoomPowerLevels::new(
            content.into(),
            &rules.authorization,
            self.creators(state)?,
        ))
    }

    pub fn power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        self.power_levels_at(room_id, &*self.current_state(room_id)?)
    }
}
