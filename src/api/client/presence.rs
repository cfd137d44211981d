//! `PUT/GET /presence/{userId}/status` (spec: "Presence").

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, globals::now_ms, presence},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, set_route);
    route(router, get_route)
}

async fn set_route(
    services: Arc<Services>,
    body: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let user = body.user();
    if body.body.user_id != user {
        return Err(Error::forbidden(
            "You cannot set the presence of another user",
        ));
    }
    if !presence::is_known(&body.body.presence) {
        return Err(Error::invalid_param(
            "presence must be online, unavailable or offline",
        ));
    }
    if let Some(msg) = &body.body.status_msg
        && msg.len() > 1024
    {
        return Err(Error::invalid_param("status_msg is longer than 1024 bytes"));
    }
    presence::set_local(
        &services,
        user,
        body.body.presence.clone(),
        Some(body.body.status_msg.clone()),
        true,
    )?;
    Ok(set_presence::v3::Response::new())
}

async fn get_route(
    services: Arc<Services>,
    body: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let user = body.user();
    let target = &body.body.user_id;
    if target != user && !services.rooms.share_room(user, target)? {
        return Err(Error::forbidden("You do not share a room with this user"));
    }
    let stored = if services.presence.enabled() {
        services.presence.get(target)?
    } else {
        None
    };
    Ok(match stored {
        Some(p) => {
            let mut response = get_presence::v3::Response::new(p.presence.clone());
            response.status_msg = p.status_msg.clone();
            response.currently_active = Some(p.currently_active());
            response.last_active_ago = Some(Duration::from_millis(
                now_ms().saturating_sub(p.last_active_ts),
            ));
            response
        }
        None => get_presence::v3::Response::new(PresenceState::Offline),
    })
}
