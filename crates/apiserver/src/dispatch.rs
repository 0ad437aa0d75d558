//! The router's single entry ([`entry`]) and the table from a request's [`Target`] to its
//! handler ([`dispatch`]). Every path of the server goes through here, after the chain's stages.

use std::time::Instant;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::encode::{bytes_response, ok};
use crate::error::ApiError;
use crate::request::{ApiRequest, Target};
use crate::route::Route;
use crate::{
    console, discovery, efivars_api, export_api, guest_agent, handlers, portforward, reviews,
    serial_log, state_api, tpm_api, ui, vnc, volume_import,
};

/// The body of a request, with the WebSocket upgrade when the client asked for one.
pub struct RequestBody {
    pub body: Body,
    pub upgrade: Option<WebSocketUpgrade>,
}

/// The router's only handler: parse once, the chain's stages, the handler, their completion.
pub async fn entry(State(app): State<AppState>, request: Request<Body>) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let mut request = ApiRequest::from_parts(&parts);
    let upgrade = if request.websocket {
        WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .ok()
    } else {
        None
    };
    let response = match app.chain.admit(&mut request) {
        Ok(()) => dispatch(&app, &request, RequestBody { body, upgrade }).await,
        Err(error) => error.into_response(),
    };
    app.chain
        .completed(&request, response.status(), started.elapsed());
    response
}

fn method_not_allowed(method: &Method) -> Response {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method})"
    ))
    .into_response()
}

/// The handler of an admitted request.
pub async fn dispatch(app: &AppState, request: &ApiRequest, body: RequestBody) -> Response {
    let read = request.method == Method::GET || request.method == Method::HEAD;
    match &request.target {
        Target::Invalid(error) => error.clone().into_response(),
        Target::Ui(path) => ui::serve(&request.method, path, request.accepted.html),
        Target::Export(target) => export_api::serve(app, request, target).await,
        Target::SelfSubjectAccessReview | Target::SelfSubjectReview
            if request.method == Method::POST =>
        {
            match crate::http::read_body(body.body).await {
                Ok(bytes) => reviews::answer(app, request, &bytes),
                Err(error) => error.into_response(),
            }
        }
        _ if !read && !matches!(request.target, Target::Api(_) | Target::Upload { .. }) => {
            method_not_allowed(&request.method)
        }
        Target::Version => ok(&discovery::version()),
        Target::CoreVersions => ok(&discovery::core_versions()),
        Target::GroupList => ok(&discovery::group_list()),
        Target::OpenApiV2 => openapi_v2(request),
        Target::OpenApiV3Root => ok(&crate::openapi::root()),
        Target::OpenApiV3(path) => match crate::openapi::document_at(path) {
            Some(json) => bytes_response(StatusCode::OK, json.to_vec()),
            None => {
                ApiError::not_found(format!("no OpenAPI v3 document for {path}")).into_response()
            }
        },
        Target::Health => "ok".into_response(),
        Target::Upload { asynchronous } => {
            crate::upload::upload(app, request, *asynchronous, body.body).await
        }
        Target::Metrics => metrics(app),
        Target::SelfSubjectAccessReview | Target::SelfSubjectReview => {
            method_not_allowed(&request.method)
        }
        Target::Api(route) => api(app, request, route.clone(), body).await,
    }
}

/// A path under `/api/` or `/apis/`: the streaming subresources, else the REST handlers.
async fn api(app: &AppState, request: &ApiRequest, route: Route, body: RequestBody) -> Response {
    let read = request.method == Method::GET;
    match route {
        Route::Console { namespace, name } if read => {
            console::handler(app, &namespace, &name, body.upgrade).await
        }
        Route::MigrationTunnel {
            namespace,
            name,
            migration_id,
            channel,
        } if read => {
            crate::migration_tunnel::handler(
                app,
                &namespace,
                &name,
                &migration_id,
                channel,
                body.upgrade,
            )
            .await
        }
        Route::Vnc { namespace, name } if read => {
            vnc::handler(app, &namespace, &name, body.upgrade).await
        }
        Route::PortForward {
            namespace,
            name,
            port,
            protocol,
            of_vm,
        } if read => {
            let target = portforward::Target {
                namespace: &namespace,
                name: &name,
                port: &port,
                protocol: protocol.as_deref(),
                of_vm,
            };
            portforward::handler(app, target, body.upgrade).await
        }
        Route::VncScreenshot { namespace, name } if read => {
            vnc::screenshot(app, &namespace, &name).await
        }
        Route::GuestOsInfo { namespace, name } if read => {
            guest_agent::guestosinfo(app, &namespace, &name).await
        }
        Route::SerialLog { namespace, name } if read => {
            serial_log::handler(app, request, namespace, name).await
        }
        Route::StateGenerations { namespace, name } if read => {
            state_api::list(app, &namespace, &name).await
        }
        Route::TpmEndorsementKey { namespace, name } if read => {
            tpm_api::endorsement_key(app, &namespace, &name).await
        }
        Route::EfiVars {
            namespace,
            name,
            id,
        } if read => efivars_api::get(app, &namespace, &name, id.as_deref()).await,
        Route::EfiVars {
            namespace,
            name,
            id: Some(id),
        } if request.method == Method::PUT => match crate::http::read_body(body.body).await {
            Ok(bytes) => efivars_api::change(app, &namespace, &name, &id, Some(&bytes)).await,
            Err(error) => error.into_response(),
        },
        Route::EfiVars {
            namespace,
            name,
            id: Some(id),
        } if request.method == Method::DELETE => {
            efivars_api::change(app, &namespace, &name, &id, None).await
        }
        Route::EfiVars {
            namespace,
            name,
            id: None,
        } if request.method == Method::DELETE => efivars_api::reset(app, &namespace, &name).await,
        Route::EfiVars {
            namespace,
            name,
            id: None,
        } if request.method == Method::PUT => match crate::http::read_body(body.body).await {
            Ok(bytes) => efivars_api::enroll(app, &namespace, &name, &bytes).await,
            Err(error) => error.into_response(),
        },
        Route::EfiVars { .. } => method_not_allowed(&request.method),
        Route::VolumeImport { namespace, name } if request.method == Method::PUT => {
            volume_import::handler(app, request, &namespace, &name, body.body).await
        }
        Route::VolumeImport { .. } => method_not_allowed(&request.method),
        Route::StateRollback { namespace, name } if request.method == Method::PUT => {
            match crate::http::read_body(body.body).await {
                Ok(bytes) => state_api::rollback(app, &namespace, &name, &bytes).await,
                Err(error) => error.into_response(),
            }
        }
        Route::StateRekey { namespace, name } if request.method == Method::PUT => {
            match crate::http::read_body(body.body).await {
                Ok(bytes) => state_api::rekey(app, &namespace, &name, &bytes).await,
                Err(error) => error.into_response(),
            }
        }
        Route::DeletedVmStates { namespace } if read => {
            state_api::list_deleted(app, namespace.as_deref()).await
        }
        Route::DeletedVmStates {
            namespace: Some(namespace),
        } if request.method == Method::DELETE => state_api::purge_expired(app, &namespace).await,
        Route::DeletedVmState { namespace, uuid } if read => {
            state_api::get_deleted(app, &namespace, &uuid).await
        }
        Route::DeletedVmState { namespace, uuid } if request.method == Method::DELETE => {
            state_api::purge(app, &namespace, &uuid).await
        }
        Route::DeletedVmStates { .. } | Route::DeletedVmState { .. } => {
            method_not_allowed(&request.method)
        }
        Route::Collection {
            resource: ferrovirt_resources::UPLOAD_TOKEN_REQUESTS,
            namespace: Some(namespace),
        } if request.method == Method::POST => {
            crate::upload::token_request(app, request, &namespace, body.body)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Route::Collection {
            resource: ferrovirt_resources::UPLOAD_TOKEN_REQUESTS,
            ..
        }
        | Route::Item {
            resource: ferrovirt_resources::UPLOAD_TOKEN_REQUESTS,
            ..
        }
        | Route::Status {
            resource: ferrovirt_resources::UPLOAD_TOKEN_REQUESTS,
            ..
        } => method_not_allowed(&request.method),
        route => handlers::handle(app, request, route, body.body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// OpenAPI v2 as JSON (kubectl asks for protobuf, which is not served: 406, and it uses v3).
fn openapi_v2(request: &ApiRequest) -> Response {
    if !request.accepted.json {
        return ApiError::new(
            406,
            "NotAcceptable",
            "only application/json is served for /openapi/v2",
        )
        .into_response();
    }
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes =
        DOC.get_or_init(|| serde_json::to_vec(&discovery::openapi_v2()).unwrap_or_default());
    bytes_response(StatusCode::OK, bytes.clone())
}

/// `GET /metrics`: the Prometheus text of the server's metrics.
fn metrics(state: &AppState) -> Response {
    let Some(metrics) = &state.metrics else {
        return ApiError::not_found("this server keeps no metrics").into_response();
    };
    match metrics.encode() {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                ferrovirt_metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::internal("the metrics could not be encoded").into_response(),
    }
}
