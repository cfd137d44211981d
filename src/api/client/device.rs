//! Device management (spec: "Device management"). Removing a device removes its access
//! and refresh tokens, so it is logged out at once; that needs the account password.

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt, UserId,
    api::client::device::{
        self, delete_device, delete_devices, get_device, get_devices, update_device,
    },
};
use serde_json::Value;

use super::account::uiaa;
use crate::{
    api::{
        router::{AppRouter, route},
        ruma::Ruma,
    },
    error::{Error, Result},
    service::{Services, users::Device},
};

pub fn routes(router: AppRouter) -> AppRouter {
    let router = route(router, get_devices_route);
    let router = route(router, get_device_route);
    let router = route(router, update_device_route);
    let router = route(router, delete_device_route);
    route(router, delete_devices_route)
}

/// Synapse's limit for device display names.
const MAX_DISPLAY_NAME_LEN: usize = 100;

fn to_client(device: Device) -> device::Device {
    let mut out = device::Device::new(device.device_id);
    out.display_name = device.display_name;
    out.last_seen_ip = device.last_seen_ip;
    out.last_seen_ts = device
        .last_seen_ts
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    out
}

async fn get_devices_route(
    services: Arc<Services>,
    body: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response> {
    let devices = services
        .users
        .devices(body.user())?
        .into_iter()
        .map(to_client)
        .collect();
    Ok(get_devices::v3::Response::new(devices))
}

async fn get_device_route(
    services: Arc<Services>,
    body: Ruma<get_device::v3::Request>,
) -> Result<get_device::v3::Response> {
    let device = services
        .users
        .device(body.user(), body.body.device_id.as_str())?
        .ok_or_else(|| Error::not_found("Unknown device"))?;
    Ok(get_device::v3::Response::new(to_client(device)))
}

async fn update_device_route(
    services: Arc<Services>,
    body: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    let device_id = body.body.device_id.as_str();
    if services.users.device(body.user(), device_id)?.is_none() {
        return Err(Error::not_found("Unknown device"));
    }
    // Only a `display_name` key in the body changes the name; `null` clears it. ruma cannot
    // tell an absent key from `null`, so the raw body decides.
    let json = body.json_body();
    let Some(name) = json.as_ref().and_then(|b| b.get("display_name")) else {
        return Ok(update_device::v3::Response::new());
    };
    let name = match name {
        Value::Null => None,
        Value::String(name) if name.len() > MAX_DISPLAY_NAME_LEN => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                "M_TOO_LARGE",
                format!("Device display name is too long (max {MAX_DISPLAY_NAME_LEN})"),
            ));
        }
        Value::String(name) => Some(name.clone()),
        _ => return Err(Error::bad_json("display_name must be a string")),
    };
    services
        .users
        .set_device_display_name(body.user(), device_id, name)?;
    Ok(update_device::v3::Response::new())
}

/// Password re-authentication, then removal. Unknown devices are skipped: the client's
/// goal, that they are gone, holds.
async fn remove_devices<'a>(
    services: &Services,
    user_id: &UserId,
    json_body: Option<&Value>,
    devices: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    uiaa(
        services,
        json_body,
        &[vec!["m.login.password"]],
        Some(user_id),
    )
    .await?;
    for device_id in devices {
        services.remove_device(user_id, device_id)?;
    }
    Ok(())
}

async fn delete_device_route(
    services: Arc<Services>,
    body: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    remove_devices(
        &services,
        body.user(),
        body.json_body().as_ref(),
        [body.body.device_id.as_str()],
    )
    .await?;
    Ok(delete_device::v3::Response::new())
}

async fn delete_devices_route(
    services: Arc<Services>,
    body: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    remove_devices(
        &services,
        body.user(),
        body.json_body().as_ref(),
        body.body.devices.iter().map(|d| d.as_str()),
    )
    .await?;
    Ok(delete_devices::v3::Response::new())
}
