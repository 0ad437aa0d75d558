//! What CDI's http source refers to, read through the [`ObjectClient`] when an import starts:
//! `certConfigMap` (a ConfigMap whose `ca.pem` holds the CA certificates), `secretRef` (a Secret
//! with `accessKeyId` and `secretKey`: basic authentication), `secretExtraHeaders` (Secrets each
//! of whose values is a header line) beside `extraHeaders`. A missing object or key fails the
//! import with the field and what is missing.

use base64::Engine as _;
use ferrovirt_api::cdi::HttpSource;
use ferrovirt_importer::HttpRequest;
use ferrovirt_importer::http::parse_header_line;
use ferrovirt_resources::{CONFIG_MAPS, SECRETS};
use serde_json::Value;

use crate::client::ObjectClient;

/// A Secret's values, decoded (`data` base64, `stringData` as written).
pub(crate) fn secret_values(
    client: &dyn ObjectClient,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<Vec<(String, String)>, String> {
    let secret = client
        .get(&SECRETS, Some(namespace), name)
        .map_err(|e| format!("{field}: Secret {namespace}/{name}: {e}"))?;
    let mut values = Vec::new();
    for (key, value) in secret
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let text = value.as_str().unwrap_or("");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("{field}: Secret {name} key {key}: not base64: {e}"))?;
        values.push((key.clone(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (key, value) in secret
        .get("stringData")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        values.push((key.clone(), value.as_str().unwrap_or("").to_owned()));
    }
    Ok(values)
}

/// The importer's request for `source.http` of a DataVolume in `namespace`.
pub fn http_request(
    client: &dyn ObjectClient,
    namespace: &str,
    http: &HttpSource,
) -> Result<HttpRequest, String> {
    let mut request = HttpRequest {
        url: http.url.clone(),
        insecure_skip_verify: http.insecure_skip_verify.unwrap_or(false),
        ..HttpRequest::default()
    };
    for (i, line) in http.extra_headers.iter().enumerate() {
        let header = parse_header_line(line).ok_or_else(|| {
            format!("spec.source.http.extraHeaders[{i}]: {line:?} is not a 'Name: value' line")
        })?;
        request.headers.push(header);
    }
    for (i, name) in http.secret_extra_headers.iter().enumerate() {
        let field = format!("spec.source.http.secretExtraHeaders[{i}]");
        for (key, line) in secret_values(client, namespace, name, &field)? {
            let header = parse_header_line(&line).ok_or_else(|| {
                format!("{field}: Secret {name} key {key} is not a 'Name: value' header line")
            })?;
            request.headers.push(header);
        }
    }
    if let Some(name) = http.secret_ref.as_deref().filter(|n| !n.is_empty()) {
        let field = "spec.source.http.secretRef";
        let values = secret_values(client, namespace, name, field)?;
        let value = |key: &str| {
            values
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("{field}: Secret {name} has no {key}"))
        };
        request.basic_auth = Some((value("accessKeyId")?, value("secretKey")?));
    }
    if let Some(name) = http.cert_config_map.as_deref().filter(|n| !n.is_empty()) {
        let field = "spec.source.http.certConfigMap";
        let map = client
            .get(&CONFIG_MAPS, Some(namespace), name)
            .map_err(|e| format!("{field}: ConfigMap {namespace}/{name}: {e}"))?;
        let pem = map
            .pointer("/data/ca.pem")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{field}: ConfigMap {name} has no ca.pem"))?;
        request.ca_pem = Some(pem.as_bytes().to_vec());
    }
    Ok(request)
}
