//! Who may use the ferrovirt API, and what they did: authentication, authorization and audit, done
//! the Kubernetes way so that `kubectl` and kubeconfig files work unchanged.
//!
//! This crate owns the PKI of `ferrovirt serve` ([`pki`]: CA, serving certificate, client
//! certificates, the rustls server configuration, identities of verified client certificates),
//! bearer tokens ([`tokens`]: kube-apiserver's static token file and the admin token), the
//! authenticator that turns a request's credentials into a [`user::UserInfo`] ([`authn`]), RBAC
//! as Kubernetes evaluates it with its default roles and KubeVirt's ([`rbac`]),
//! SelfSubjectAccessReview for `kubectl auth can-i` ([`review`]), the audit log in
//! kube-apiserver's `audit.k8s.io/v1` shape ([`audit`]) and kubeconfig files on both sides
//! ([`kubeconfig`]: written by the server, found and resolved by the client with kubectl's rules).
//!
//! It knows nothing about HTTP servers: the API server passes header values and peer
//! certificates in, and gets identities, decisions and Kubernetes `Status` bodies out.

pub mod audit;
pub mod authn;
pub mod kubeconfig;
pub mod pki;
pub mod rbac;
pub mod review;
pub mod status;
pub mod tokens;
pub mod upload_token;
pub mod user;

pub use authn::{Authenticator, Credentials, Unauthorized};
pub use rbac::{Attributes, Decision, RbacPolicy};
pub use user::UserInfo;

/// The crypto provider of every rustls configuration made here (ring: it builds without cmake or
/// clang).
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
