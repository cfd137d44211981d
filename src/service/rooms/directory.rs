//! The public room directory as both APIs list it: the client-server `/publicRooms` and
//! the server-server one a peer's users browse through.

use ruma::{
    OwnedMxcUri, RoomAliasId, RoomId, UInt,
    directory::{Filter, PublicRoomsChunk, PublicRoomsChunkInit, RoomNetwork},
    events::StateEventType,
    room::{JoinRuleKind, RoomType},
};

use super::Rooms;
use crate::error::{Error, Result};

/// One page of the directory.
pub struct PublicRoomsPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    /// Every listed room, before the filter, as Synapse's estimate counts.
    pub total: UInt,
}

fn matches_filter(chunk: &PublicRoomsChunk, filter: &Filter) -> bool {
    if !filter.room_types.is_empty()
        && !filter
            .room_types
            .iter()
            .any(|t| t.as_str() == chunk.room_type.as_ref().map(|r| r.as_str()))
    {
        return false;
    }
    let Some(term) = filter.generic_search_term.as_deref() else {
        return true;
    };
    let term = term.to_lowercase();
    [
        chunk.name.as_deref(),
        chunk.topic.as_deref(),
        chunk.canonical_alias.as_ref().map(|a| a.as_str()),
    ]
    .into_iter()
    .flatten()
    .any(|text| text.to_lowercase().contains(&term))
}

impl Rooms {
    /// The directory entry of a room, or `None` when the room may not be listed: as in
    /// Synapse, only rooms that anyone can join, knock on or read, and that someone is in.
    pub fn directory_entry(&self, room_id: &RoomId) -> Result<Option<PublicRoomsChunk>> {
        let state = self.current_state(room_id)?;
        let field = |kind: StateEventType, field: &str| -> Result<Option<String>> {
            Ok(self
                .state_get(&state, &kind, "")?
                .and_then(|pdu| pdu.content_field(field))
                .and_then(|v| v.as_str().map(ToOwned::to_owned)))
        };
        // The spec's defaults when the event is missing.
        let join_rule = field(StateEventType::RoomJoinRules, "join_rule")?
            .unwrap_or_else(|| "invite".to_owned());
        let world_readable = field(StateEventType::RoomHistoryVisibility, "history_visibility")?
            .is_some_and(|v| v == "world_readable");
        let joinable = matches!(join_rule.as_str(), "public" | "knock" | "knock_restricted");
        let joined = self.joined_members(room_id)?.len();
        if !(joinable || world_readable) || joined == 0 {
            return Ok(None);
        }
        let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
            num_joined_members: UInt::new_saturating(joined as u64),
            room_id: room_id.to_owned(),
            world_readable,
            guest_can_join: field(StateEventType::RoomGuestAccess, "guest_access")?
                .is_some_and(|v| v == "can_join"),
        }
        .into();
        chunk.name = field(StateEventType::RoomName, "name")?.filter(|n| !n.is_empty());
        chunk.topic = field(StateEventType::RoomTopic, "topic")?.filter(|t| !t.is_empty());
        chunk.canonical_alias = field(StateEventType::RoomCanonicalAlias, "alias")?
            .and_then(|a| RoomAliasId::parse(a).ok());
        chunk.avatar_url = field(StateEventType::RoomAvatar, "url")?
            .filter(|u| !u.is_empty())
            .map(OwnedMxcUri::from);
        chunk.join_rule = JoinRuleKind::from(join_rule.as_str());
        chunk.room_type =
            field(StateEventType::RoomCreate, "type")?.map(|t| RoomType::from(t.as_str()));
        Ok(Some(chunk))
    }

    /// The published rooms, largest first. `since` is an offset into that order; a page
    /// ends after `limit` rooms (no limit, or 0, lists everything, as in Synapse).
    pub fn public_rooms_page(
        &self,
        limit: Option<UInt>,
        since: Option<&str>,
        filter: &Filter,
        network: &RoomNetwork,
    ) -> Result<PublicRoomsPage> {
        let offset: usize = match since {
            Some(token) => token
                .parse()
                .map_err(|_| Error::invalid_param("Invalid since token"))?,
            None => 0,
        };
        let mut listed = Vec::new();
        // Third-party networks come from bridges (application services); none are known here.
        if !matches!(network, RoomNetwork::ThirdParty(_)) {
            for room_id in self.public_rooms()? {
                if let Some(chunk) = self.directory_entry(&room_id)? {
                    listed.push(chunk);
                }
            }
        }
        let total = UInt::new_saturating(listed.len() as u64);
        listed.sort_by(|a, b| {
            b.num_joined_members
                .cmp(&a.num_joined_members)
                .then_with(|| b.room_id.cmp(&a.room_id))
        });
        let mut matching: Vec<_> = listed
            .into_iter()
            .filter(|c| matches_filter(c, filter))
            .collect();
        let limit = limit
            .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
            .filter(|l| *l > 0);
        let start = offset.min(matching.len());
        let end = limit.map_or(matching.len(), |l| {
            start.saturating_add(l).min(matching.len())
        });
        let next_batch = (end < matching.len()).then(|| end.to_string());
        let prev_batch =
            (start > 0).then(|| start.saturating_sub(limit.unwrap_or(start)).to_string());
        matching.truncate(end);
        let chunk = matching.split_off(start);
        Ok(PublicRoomsPage {
            chunk,
            next_batch,
            prev_batch,
            total,
        })
    }
}
