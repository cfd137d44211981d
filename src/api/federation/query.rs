//! Queries (spec: server-server API, "Query"): another server asks about a local user.

use std::sync::Arc;

use ruma::api::federation::query::get_profile_information;

use crate::{
    api::{router::AppRouter, router::route, ruma::Ruma},
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    route(router, get_profile_information_route)
}

/// `GET /_matrix/federation/v1/query/profile`: a local user's display name and avatar,
/// or the one `field` asked for.
async fn get_profile_information_route(
    services: Arc<Services>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    let body = request.body;
    if body.user_id.server_name() != services.globals.server_name() {
        return Err(Error::invalid_param("User is not local to this server"));
    }
    let record = services
        .users
        .get(&body.user_id)?
        .filter(|r| !r.deactivated)
        .ok_or_else(|| Error::not_found("User not found"))?;
    let mut response = get_profile_information::v1::Response::new();
    let wanted = |name: &str| body.field.as_ref().is_none_or(|f| f.as_str() == name);
    if wanted("displayname")
        && let Some(name) = record.displayname
    {
        response.set("displayname".to_owned(), name.into());
    }
    if wanted("avatar_url")
        && let Some(url) = record.avatar_url
    {
        response.set("avatar_url".to_owned(), url.into());
    }
    Ok(response)
}
