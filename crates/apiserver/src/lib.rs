//! The Kubernetes-style API server of `ferrovirt serve` (kube-apiserver's part): every HTTP
//! request is parsed once into a typed [`request::ApiRequest`] (Kubernetes' request attributes,
//! what it addresses, how it is encoded, the slot for the authenticated user) and flows through
//! one visible chain: [`chain`]'s stages (where authentication, audit, authorization and request
//! checks go) -> [`dispatch`] -> the handler ([`handlers`] for the REST API; [`console`], [`vnc`], [`portforward`], [`guest_agent`], [`migration_tunnel`],
//! [`serial_log`], [`state_api`], [`tpm_api`], [`efivars_api`], [`export_api`] (KubeVirt's export
//! server: VirtualMachineExport volumes and manifests, opened by the export's token), [`volume_import`]
//! (an export's volume into an empty PVC), [`discovery`], [`ui`], [`upload`] (CDI's UploadTokenRequest and upload paths)) -> [`encode`]. The router has a single
//! entry, so no path bypasses the stages. Writes pass [`admission`] (KubeVirt's defaults and
//! `ferrovirt_api::admit`) before the store.
//!
//! It owns no controller: VMs are started by `ferrovirt-controllers`, which sees what this server
//! stores through the store's watch.
//!
//! Modules, bottom to top: [`encode`] (responses) <- [`error`] (Status objects) <- [`route`] (URL
//! -> resource), [`export_path`] (export proxy URL -> volume/format), [`http`] (bodies, field selectors), [`patch`], [`protobuf`], [`strict`], [`table`]
//! <- [`request`] (the typed request) <- [`chain`] (stages) <- [`app`] (shared state) <-
//! [`admission`], [`templates`] (Harvester version numbering), [`cascade`] (orphaning, namespace
//! deletion) <- [`handlers`], [`console`] (<- [`vnc`], [`portforward`], [`guest_agent`], [`migration_tunnel`]), [`serial_log`], [`state_api`] (<-
//! [`tpm_api`], [`efivars_api`]),
//! [`export_api`], [`volume_import`], [`discovery`] (<- [`openapi`]), [`ui`], [`upload`] <- [`dispatch`] (the entry). No module imports one that imports it back.

pub mod admission;
pub mod app;
pub mod cascade;
pub mod chain;
pub mod console;
pub mod discovery;
pub mod dispatch;
pub mod efivars_api;
pub mod encode;
pub mod error;
pub mod export_api;
pub mod export_path;
pub mod guest_agent;
pub mod handlers;
pub mod http;
pub mod migration_tunnel;
pub mod openapi;
pub mod patch;
pub mod portforward;
pub mod protobuf;
pub mod request;
pub mod reviews;
pub mod route;
pub mod security;
pub mod serial_log;
pub mod state_api;
pub mod strict;
pub mod table;
pub mod templates;
pub mod tpm_api;
pub mod ui;
pub mod upload;
pub mod vnc;
pub mod volume_import;
pub mod watch_limit;

pub use app::AppState;
pub use chain::{Chain, Stage};
pub use request::{ApiRequest, RequestAttributes, UserInfo};

/// The HTTP router: one entry for every path and method ([`dispatch::entry`]).
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .fallback(dispatch::entry)
        .with_state(state)
}
