//! User profiles: display name and avatar URL (spec: "Profiles"). A change is stored on the
//! account and announced as a new `m.room.member` join event in every room the user is in,
//! which is how other members learn about it.

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::profile::{
        ProfileFieldName, ProfileFieldValue, delete_profile_field, get_profile, get_profile_field,
        set_profile_field,
    },
    events::StateEventType,
};
use serde_json::{Map, Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, rooms::PduBuilder, users::UserRecord},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_profile_route);
    let router = route(router, get_field_route);
    let router = route(router, set_field_route);
    route(router, delete_field_route)
}

/// Synapse's limits; longer values bloat every member event of the user.
const MAX_DISPLAYNAME_LEN: usize = 256;
const MAX_AVATAR_URL_LEN: usize = 1000;

/// The profile fields this server stores. Custom fields (Matrix 1.16) are not supported.
#[derive(Clone, Copy)]
enum Field {
    DisplayName,
    AvatarUrl,
}

impl Field {
    fn from_name(name: &ProfileFieldName) -> Option<Self> {
        match name {
            ProfileFieldName::DisplayName => Some(Self::DisplayName),
            ProfileFieldName::AvatarUrl => Some(Self::AvatarUrl),
            _ => None,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::DisplayName => "displayname",
            Self::AvatarUrl => "avatar_url",
        }
    }

    fn get(self, record: &UserRecord) -> Option<&str> {
        match self {
            Self::DisplayName => record.displayname.as_deref(),
            Self::AvatarUrl => record.avatar_url.as_deref(),
        }
    }

    fn set(self, record: &mut UserRecord, value: Option<String>) {
        match self {
            Self::DisplayName => record.displayname = value,
            Self::AvatarUrl => record.avatar_url = value,
        }
    }
}

/// The profile of a user: stored here for local users, asked of their server
/// (`/query/profile`) for others.
async fn profile_of(services: &Services, user_id: &UserId) -> Result<UserRecord> {
    if user_id.server_name() != services.globals.server_name() {
        let response = services
            .federation
            .send(
                user_id.server_name(),
                ruma::api::federation::query::get_profile_information::v1::Request::new(
                    user_id.to_owned(),
                ),
            )
            .await?;
        let data = serde_json::to_value(&response.data)?;
        let field = |name: &str| {
            data.get(name)
                .and_then(|v| v.as_str())
                .map(ToOwned::to_owned)
        };
        return Ok(UserRecord {
            displayname: field("displayname"),
            avatar_url: field("avatar_url"),
            ..UserRecord::default()
        });
    }
    services
        .users
        .get(user_id)?
        .filter(|u| !u.deactivated)
        .ok_or_else(|| Error::not_found("Profile not found"))
}

async fn get_profile_route(
    services: Arc<Services>,
    body: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let record = profile_of(&services, &body.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    for field in [Field::DisplayName, Field::AvatarUrl] {
        if let Some(value) = field.get(&record) {
            response.data.set(field.key().to_owned(), json!(value));
        }
    }
    // As Synapse: a profile with nothing in it is reported as missing.
    if response.data.iter().next().is_none() {
        return Err(Error::not_found("Profile not found"));
    }
    Ok(response)
}

async fn get_field_route(
    services: Arc<Services>,
    body: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response> {
    let record = profile_of(&services, &body.body.user_id).await?;
    let value = Field::from_name(&body.body.field)
        .and_then(|field| Some((field, field.get(&record)?)))
        .ok_or_else(|| Error::not_found("The user has no such profile field"))?;
    let value = ProfileFieldValue::new(value.0.key(), json!(value.1))
        .map_err(|e| Error::internal(format_args!("stored profile field: {e}")))?;
    Ok(get_profile_field::v3::Response::new(value))
}

async fn set_field_route(
    services: Arc<Services>,
    body: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response> {
    let (field, value) = match &body.body.value {
        ProfileFieldValue::DisplayName(name) => {
            if name.len() > MAX_DISPLAYNAME_LEN {
                return Err(Error::bad_json(format!(
                    "Display name is too long (max {MAX_DISPLAYNAME_LEN})"
                )));
            }
            (Field::DisplayName, name.clone())
        }
        ProfileFieldValue::AvatarUrl(url) => {
            if url.as_str().len() > MAX_AVATAR_URL_LEN {
                return Err(Error::bad_json(format!(
                    "Avatar URL is too long (max {MAX_AVATAR_URL_LEN})"
                )));
            }
            (Field::AvatarUrl, url.to_string())
        }
        _ => {
            return Err(Error::forbidden(
                "Only displayname and avatar_url can be set on this server",
            ));
        }
    };
    // Clients clear a field by setting it to the empty string.
    let value = (!value.is_empty()).then_some(value);
    change(&services, body.user(), &body.body.user_id, field, value).await?;
    Ok(set_profile_field::v3::Response::new())
}

async fn delete_field_route(
    services: Arc<Services>,
    body: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    let field = Field::from_name(&body.body.field).ok_or_else(|| {
        Error::forbidden("Only displayname and avatar_url can be changed on this server")
    })?;
    change(&services, body.user(), &body.body.user_id, field, None).await?;
    Ok(delete_profile_field::v3::Response::new())
}

async fn change(
    services: &Services,
    sender: &UserId,
    target: &UserId,
    field: Field,
    value: Option<String>,
) -> Result<()> {
    if sender != target {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    let record = services.users.update(sender, |u| field.set(u, value))?;
    propagate(services, sender, &record).await
}

/// Sends a join event with the new profile into every room the user is joined to, keeping
/// the rest of their member content. A room where this fails is logged and skipped, as
/// Synapse does: the profile itself has changed either way.
async fn propagate(services: &Services, user_id: &UserId, record: &UserRecord) -> Result<()> {
    for room_id in services.rooms.rooms_joined(user_id)? {
        // Under the room lock so a concurrent leave cannot be undone by this join.
        let _lock = services.rooms.lock_room(&room_id).await;
        if !services.rooms.is_joined(user_id, &room_id)? {
            continue;
        }
        let current = services
            .rooms
            .room_state_get(&room_id, &StateEventType::RoomMember, user_id.as_str())?
            .and_then(|pdu| serde_json::from_str::<Map<String, Value>>(pdu.content.get()).ok())
            .unwrap_or_default();
        let unchanged = [Field::DisplayName, Field::AvatarUrl]
            .iter()
            .all(|f| current.get(f.key()).and_then(Value::as_str) == f.get(record));
        if unchanged {
            continue;
        }
        let mut content = current;
        // Both describe the original membership change, not this profile update.
        content.remove("join_authorised_via_users_server");
        content.remove("reason");
        content.insert("membership".to_owned(), json!("join"));
        for field in [Field::DisplayName, Field::AvatarUrl] {
            match field.get(record) {
                Some(value) => content.insert(field.key().to_owned(), json!(value)),
                None => content.remove(field.key()),
            };
        }
        let builder = PduBuilder::state(StateEventType::RoomMember, user_id.as_str(), &content);
        if let Err(e) = services
            .rooms
            .build_and_append_locked(user_id, Some(&room_id), builder)
        {
            tracing::warn!(%room_id, %user_id, "profile update not sent to room: {e}");
        }
    }
    Ok(())
}
