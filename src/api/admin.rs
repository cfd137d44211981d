//! The admin API, in Synapse's shapes (`/_synapse/admin/...`) so existing tools work:
//! media quarantine and deletion. Only server admins (`conduit user create --admin`) may
//! call it.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
    routing::{delete, post},
};
use ruma::OwnedServerName;
use serde_json::json;

use crate::{
    api::{router::AppRouter, ruma::authenticate},
    error::{Error, Result},
    service::Services,
};

pub fn routes(router: AppRouter) -> AppRouter {
    router
        .route(
            "/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}",
            post(quarantine_media),
        )
        .route(
            "/_synapse/admin/v1/media/{server_name}/{media_id}",
            delete(delete_media),
        )
}

fn require_admin(services: &Services, request: Request) -> Result<()> {
    let (parts, _) = request.into_parts();
    let (user, _) = authenticate(services, &parts, false)?;
    if !services.users.is_admin(&user)? {
        return Err(Error::forbidden("You are not a server admin"));
    }
    Ok(())
}

fn server_name(name: String) -> Result<OwnedServerName> {
    name.try_into()
        .map_err(|_| Error::invalid_param("Invalid server name"))
}

async fn quarantine_media(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let result = (|| {
        require_admin(&services, request)?;
        services
            .media
            .quarantine(&server_name(server)?, &media_id)?;
        Ok::<_, Error>(Json(json!({})))
    })();
    result.into_response()
}

async fn delete_media(
    State(services): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let result = async {
        require_admin(&services, request)?;
        let server = server_name(server)?;
        // Synapse deletes only local media here; remote copies go through its cache API.
        if server != services.globals.server_name() {
            return Err(Error::invalid_param("Can only delete local media"));
        }
        services.media.delete(&server, &media_id).await?;
        Ok::<_, Error>(Json(json!({ "deleted_media": [media_id], "total": 1 })))
    }
    .await;
    result.into_response()
}
