//! Registration, login, logout, tokens, password and deactivation (spec: "Client
//! Authentication" and "Account registration and management").

use std::{sync::Arc, time::Duration};

use ruma::{
    OwnedDeviceId, OwnedUserId, UserId,
    api::client::{
        account::ThirdPartyIdRemovalStatus,
        account::{
            change_password, check_registration_token_validity, deactivate,
            get_username_availability, register, whoami,
        },
        session::{get_login_types, login, logout, logout_all, refresh_token},
    },
    events::room::member::MembershipState,
};
use serde_json::{Value, json};

use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, globals::random_string},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, register_route);
    let router = route(router, availability_route);
    let router = route(router, login_types_route);
    let router = route(router, login_route);
    let router = route(router, logout_route);
    let router = route(router, logout_all_route);
    let router = route(router, whoami_route);
    let router = route(router, refresh_route);
    let router = route(router, change_password_route);
    let router = route(router, token_validity_route);
    route(router, deactivate_route)
}

/// Localparts a new user may take: the spec's historical grammar, lower case only.
fn valid_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart.len() <= 200
        && localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        )
}

fn new_user_id(services: &Services, username: Option<&str>) -> Result<OwnedUserId> {
    let server = services.globals.server_name();
    match username {
        Some(name) => {
            let localpart = name
                .strip_prefix('@')
                .map_or(name, |n| n.split(':').next().unwrap_or(n));
            if !valid_localpart(localpart) {
                return Err(Error::invalid_username(
                    "User ID may only contain a-z, 0-9, . _ = - / +",
                ));
            }
            let user_id = UserId::parse_with_server_name(localpart, server)
                .map_err(|_| Error::invalid_username("Invalid user ID"))?;
            if services.users.exists(&user_id)? {
                return Err(Error::user_in_use("User ID is already taken"));
            }
            Ok(user_id)
        }
        None => loop {
            let user_id = UserId::parse_with_server_name(random_string(12).to_lowercase(), server)
                .map_err(Error::internal)?;
            if !services.users.exists(&user_id)? {
                return Ok(user_id);
            }
        },
    }
}

/// Runs user-interactive authentication for `flows`. Returns once a flow is complete;
/// otherwise the 401 challenge (or an error inside it) is the error.
pub async fn uiaa(
    services: &Services,
    json_body: Option<&Value>,
    flows: &[Vec<&str>],
    user_id: Option<&UserId>,
) -> Result<()> {
    let auth = json_body
        .and_then(|b| b.get("auth"))
        .filter(|a| a.is_object());
    let Some(auth) = auth else {
        return Err(services.uiaa.challenge(flows, None, json!({}), None));
    };
    let session = auth
        .get("session")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned);
    let session_id = session.clone().unwrap_or_else(|| random_string(24));
    let stage = auth.get("type").and_then(Value::as_str).unwrap_or_default();
    let stage_error = match stage {
        "m.login.dummy" => None,
        "m.login.registration_token" => {
            let given = auth.get("token").and_then(Value::as_str);
            match (&services.config().registration_token, given) {
                (Some(expected), Some(given)) if expected == given => None,
                _ => Some(Error::forbidden("Invalid registration token")),
            }
        }
        "m.login.password" => {
            let Some(user_id) = user_id else {
                return Err(Error::forbidden(
                    "Password authentication needs a logged-in user",
                ));
            };
            let claimed = auth_identifier(auth)
                .map(|u| parse_user(services, &u))
                .transpose()?;
            let password = auth
                .get("password")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if claimed.as_deref().is_some_and(|c| c != user_id) {
                Some(Error::forbidden("Invalid username or password"))
            } else if services.users.check_password(user_id, password).await? {
                None
            } else {
                Some(Error::forbidden("Invalid username or password"))
            }
        }
        "" => Some(Error::bad_json("Missing auth type")),
        _ => Some(
            Error::unrecognized("Unsupported authentication type")
                .with_status(http::StatusCode::BAD_REQUEST),
        ),
    };
    if let Some(error) = stage_error {
        return Err(services
            .uiaa
            .challenge(flows, session.as_deref(), json!({}), Some(error)));
    }
    let allowed = flows.iter().any(|f| f.contains(&stage));
    if allowed {
        services.uiaa.complete_stage(&session_id, stage);
    }
    let completed = services.uiaa.completed(&session_id);
    if flows
        .iter()
        .any(|f| f.iter().all(|s| completed.iter().any(|c| c == s)))
    {
        services.uiaa.finish(&session_id);
        return Ok(());
    }
    Err(services
        .uiaa
        .challenge(flows, Some(&session_id), json!({}), None))
}

fn auth_identifier(auth: &Value) -> Option<String> {
    if let Some(identifier) = auth.get("identifier") {
        if identifier.get("type").and_then(Value::as_str) == Some("m.id.user") {
            return identifier
                .get("user")
                .and_then(Value::as_str)
                .map(ToOwned::to_owned);
        }
        return None;
    }
    auth.get("user")
        .and_then(Value::as_str)
        .map(ToOwned::to_owned)
}

/// A login name as localpart or full user id of this server.
fn parse_user(services: &Services, name: &str) -> Result<OwnedUserId> {
    let user_id = if name.starts_with('@') {
        UserId::parse(name.to_lowercase()).map_err(|_| Error::invalid_param("Invalid user ID"))?
    } else {
        UserId::parse_with_server_name(name.to_lowercase(), services.globals.server_name())
            .map_err(|_| Error::invalid_param("Invalid user ID"))?
    };
    if user_id.server_name() != services.globals.server_name() {
        return Err(Error::forbidden("User is not on this server"));
    }
    Ok(user_id)
}

fn new_device_id() -> OwnedDeviceId {
    random_string(10).to_uppercase().into()
}

async fn register_route(
    services: Arc<Services>,
    body: Ruma<register::v3::Request>,
) -> Result<register::v3::Response> {
    let config = services.config();
    if body.body.kind == register::RegistrationKind::Guest {
        return Err(Error::guest_access_forbidden("Guest access is disabled"));
    }
    if !config.allow_registration && config.registration_token.is_none() {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    let user_id = new_user_id(&services, body.body.username.as_deref())?;
    let flows: Vec<Vec<&str>> = if config.registration_token.is_some() {
        vec![vec!["m.login.registration_token"]]
    } else {
        vec![vec!["m.login.dummy"]]
    };
    uiaa(&services, body.json_body().as_ref(), &flows, None).await?;
    // Checked again: the name may have been taken while the client did the dance.
    let user_id = new_user_id(&services, Some(user_id.localpart()))?;
    services
        .users
        .create(&user_id, body.body.password.clone())
        .await?;
    tracing::info!(%user_id, "registered user");

    let mut response = register::v3::Response::new(user_id.clone());
    if body.body.inhibit_login {
        return Ok(response);
    }
    let device_id = body.body.device_id.clone().unwrap_or_else(new_device_id);
    let tokens = services.users.login_device(
        &user_id,
        &device_id,
        body.body.initial_device_display_name.clone(),
        body.body.refresh_token,
    )?;
    services.note_new_device(&user_id, device_id.as_str())?;
    response.access_token = Some(tokens.access_token);
    response.device_id = Some(device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

async fn availability_route(
    services: Arc<Services>,
    body: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    new_user_id(&services, Some(&body.body.username))?;
    Ok(get_username_availability::v3::Response::new(true))
}

async fn login_types_route(
    _: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![
        get_login_types::v3::LoginType::Password(Default::default()),
    ]))
}

async fn login_route(
    services: Arc<Services>,
    body: Ruma<login::v3::Request>,
) -> Result<login::v3::Response> {
    let json = body.json_body().unwrap_or_default();
    if json.get("type").and_then(Value::as_str) != Some("m.login.password") {
        return Err(
            Error::unknown("Unsupported login type").with_status(http::StatusCode::BAD_REQUEST)
        );
    }
    let name = auth_identifier(&json)
        .ok_or_else(|| Error::bad_json("Missing or unsupported identifier"))?;
    let user_id = parse_user(&services, &name)?;
    let password = json
        .get("password")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(record) = services.users.get(&user_id)? else {
        return Err(Error::forbidden("Invalid username or password"));
    };
    if record.deactivated {
        return Err(Error::user_deactivated("This account has been deactivated"));
    }
    if !services.users.check_password(&user_id, password).await? {
        return Err(Error::forbidden("Invalid username or password"));
    }
    let device_id = body.body.device_id.clone().unwrap_or_else(new_device_id);
    let tokens = services.users.login_device(
        &user_id,
        &device_id,
        body.body.initial_device_display_name.clone(),
        body.body.refresh_token,
    )?;
    services.note_new_device(&user_id, device_id.as_str())?;
    let mut response = login::v3::Response::new(user_id, tokens.access_token, device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

async fn logout_route(
    services: Arc<Services>,
    body: Ruma<logout::v3::Request>,
) -> Result<logout::v3::Response> {
    services.remove_device(body.user(), body.device().as_str())?;
    Ok(logout::v3::Response::new())
}

async fn logout_all_route(
    services: Arc<Services>,
    body: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    services.remove_all_devices(body.user(), None)?;
    Ok(logout_all::v3::Response::new())
}

async fn whoami_route(
    services: Arc<Services>,
    body: Ruma<whoami::v3::Request>,
) -> Result<whoami::v3::Response> {
    let _ = services;
    let mut response = whoami::v3::Response::new(body.user().to_owned(), false);
    response.device_id = body.sender_device.clone();
    Ok(response)
}

async fn refresh_route(
    services: Arc<Services>,
    body: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    let tokens = services
        .users
        .refresh(&body.body.refresh_token)?
        .ok_or_else(|| Error::unknown_token(false))?;
    let mut response = refresh_token::v3::Response::new(tokens.access_token);
    response.refresh_token = tokens.refresh_token;
    response.expires_in_ms = tokens.expires_in_ms.map(Duration::from_millis);
    Ok(response)
}

async fn change_password_route(
    services: Arc<Services>,
    body: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let user_id = body.user().to_owned();
    uiaa(
        &services,
        body.json_body().as_ref(),
        &[vec!["m.login.password"]],
        Some(&user_id),
    )
    .await?;
    services
        .users
        .set_password(&user_id, body.body.new_password.clone())
        .await?;
    if body.body.logout_devices {
        services.remove_all_devices(&user_id, Some(body.device().as_str()))?;
    }
    Ok(change_password::v3::Response::new())
}

async fn deactivate_route(
    services: Arc<Services>,
    body: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user_id = body.user().to_owned();
    uiaa(
        &services,
        body.json_body().as_ref(),
        &[vec!["m.login.password"]],
        Some(&user_id),
    )
    .await?;
    // Leave every room, and turn down pending invites and knocks (as Synapse does).
    let rooms = services
        .rooms
        .user_rooms(&user_id)?
        .into_iter()
        .filter(|(_, r)| {
            matches!(
                r.membership,
                MembershipState::Join | MembershipState::Invite | MembershipState::Knock
            )
        });
    for (room_id, _) in rooms {
        if let Err(e) = super::membership::leave(&services, &user_id, &room_id, None).await {
            tracing::warn!(%room_id, "leaving on deactivation failed: {e}");
        }
    }
    services.remove_all_devices(&user_id, None)?;
    // The user id stays reserved: the record is kept, marked deactivated, without password.
    services.users.update(&user_id, |u| {
        u.deactivated = true;
        u.password_hash = None;
        u.displayname = None;
        u.avatar_url = None;
    })?;
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

async fn token_validity_route(
    services: Arc<Services>,
    body: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    let Some(expected) = &services.config().registration_token else {
        return Err(Error::forbidden("Registration with tokens is not enabled"));
    };
    Ok(check_registration_token_validity::v1::Response::new(
        &body.body.token == expected,
    ))
}
