//! Room aliases and the public room directory.

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId};

use super::Rooms;
use crate::{
    database::key,
    error::{Error, Result},
};

impl Rooms {
    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        Ok(self
            .alias_roomid
            .get(alias.as_bytes())?
            .and_then(|v| RoomId::parse(String::from_utf8_lossy(&v).as_ref()).ok()))
    }

    /// Who created an alias, for the permission to delete it.
    pub fn alias_creator(&self, alias: &RoomAliasId) -> Result<Option<String>> {
        let Some(room) = self.resolve_alias(alias)? else {
            return Ok(None);
        };
        Ok(self
            .roomid_aliases
            .get(key::key(&[room.as_bytes(), alias.as_bytes()]))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_alias(&self, alias: &RoomAliasId, room_id: &RoomId, creator: &str) -> Result<()> {
        // Check and write under one lock: two requests for one alias must not both win.
        let _guard = self.alias_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.alias_roomid.contains(alias.as_bytes())? {
            return Err(Error::new(
                http::StatusCode::CONFLICT,
                "M_UNKNOWN",
                "Room alias already exists",
            ));
        }
        self.db.write(|b| {
            b.put(&self.alias_roomid, alias.as_bytes(), room_id.as_bytes());
            b.put(
                &self.roomid_aliases,
                key::key(&[room_id.as_bytes(), alias.as_bytes()]),
                creator.as_bytes(),
            );
        })
    }

    pub fn remove_alias(&self, alias: &RoomAliasId) -> Result<()> {
        let Some(room) = self.resolve_alias(alias)? else {
            return Err(Error::not_found("Room alias not found"));
        };
        self.db.write(|b| {
            b.delete(&self.alias_roomid, alias.as_bytes());
            b.delete(
                &self.roomid_aliases,
                key::key(&[room.as_bytes(), alias.as_bytes()]),
            );
        })
    }

    pub fn local_aliases(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        Ok(self
            .roomid_aliases
            .scan_prefix(key::prefix(&[room_id.as_bytes()]))
            .filter_map(|(k, _)| key::last_str(&k).and_then(|a| RoomAliasId::parse(a).ok()))
            .collect())
    }

    pub fn set_public(&self, room_id: &RoomId, public: bool) -> Result<()> {
        if public {
            self.public_rooms.put(room_id.as_bytes(), [])
        } else {
            self.public_rooms.delete(room_id.as_bytes())
        }
    }

    pub fn is_public(&self, room_id: &RoomId) -> Result<bool> {
        self.public_rooms.contains(room_id.as_bytes())
    }

    pub fn public_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .public_rooms
            .iter()
            .filter_map(|(k, _)| RoomId::parse(String::from_utf8_lossy(&k).as_ref()).ok())
            .collect())
    }
}
