//! Just enough of Kubernetes' protobuf encoding to accept what `kubectl create namespace NAME`
//! sends (kubectl's typed client posts built-in kinds as `application/vnd.kubernetes.protobuf`):
//! the `k8s\0` envelope, `runtime.Unknown`, and a Namespace's ObjectMeta (name, generateName,
//! labels, annotations). Other protobuf bodies are refused with 415.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The media type kubectl's typed clients send.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

fn malformed(what: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf body is malformed: {what}"))
}

/// One field's value: a length-delimited slice, or something this decoder skips.
enum Field<'a> {
    Bytes(&'a [u8]),
    Other,
}

fn varint(data: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data
            .get(*pos)
            .ok_or_else(|| malformed("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint too long"))
}

fn fields(data: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ApiError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < data.len() {
        let key = varint(data, &mut pos)?;
        let field = match key & 7 {
            0 => {
                varint(data, &mut pos)?;
                Field::Other
            }
            1 => {
                pos = pos.checked_add(8).ok_or_else(|| malformed("overflow"))?;
                Field::Other
            }
            2 => {
                let len =
                    usize::try_from(varint(data, &mut pos)?).map_err(|_| malformed("length"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= data.len())
                    .ok_or_else(|| malformed("truncated field"))?;
                let slice = &data[pos..end];
                pos = end;
                Field::Bytes(slice)
            }
            5 => {
                pos = pos.checked_add(4).ok_or_else(|| malformed("overflow"))?;
                Field::Other
            }
            _ => return Err(malformed("unsupported wire type")),
        };
        if pos > data.len() {
            return Err(malformed("truncated field"));
        }
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
}

fn map_entry(bytes: &[u8]) -> Result<(String, String), ApiError> {
    let mut key = String::new();
    let mut value = String::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => key = text(b)?,
            (2, Field::Bytes(b)) => value = text(b)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (number, field) in fields(bytes)? {
        match (number, field) {
            (1, Field::Bytes(b)) => {
                meta.insert("name".into(), json!(text(b)?));
            }
            (2, Field::Bytes(b)) => {
                meta.insert("generateName".into(), json!(text(b)?));
            }
            (11, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                labels.insert(k, json!(v));
            }
            (12, Field::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                annotations.insert(k, json!(v));
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

/// The kind and raw object bytes inside the `k8s\0` envelope (`runtime.Unknown`).
fn envelope(body: &[u8]) -> Result<(String, &[u8]), ApiError> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing the k8s envelope"))?;
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (number, field) in fields(unknown)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (n, f) in fields(type_meta)? {
                    if let (2, Field::Bytes(b)) = (n, f) {
                        kind = text(b)?;
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    Ok((kind, raw))
}

/// The string fields of a message, by field number -> JSON name.
fn strings(bytes: &[u8], names: &[(u64, &str)]) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (number, field) in fields(bytes)? {
        if let (Some((_, name)), Field::Bytes(b)) =
            (names.iter().find(|(n, _)| *n == number), field)
        {
            out.insert((*name).to_owned(), json!(text(b)?));
        }
    }
    Ok(Value::Object(out))
}

/// What `kubectl auth can-i` and `kubectl auth whoami` post: a `SelfSubjectAccessReview`
/// (`authorization.k8s.io/v1`: spec.resourceAttributes 1 / nonResourceAttributes 2) or a
/// `SelfSubjectReview` (`authentication.k8s.io/v1`, nothing but metadata), as JSON.
pub fn decode_review(body: &[u8]) -> Result<Value, ApiError> {
    let (kind, raw) = envelope(body)?;
    let mut metadata = json!({});
    let mut spec = Map::new();
    for (number, field) in fields(raw)? {
        match (number, field) {
            (1, Field::Bytes(b)) => metadata = object_meta(b)?,
            (2, Field::Bytes(b)) if kind == "SelfSubjectAccessReview" => {
                for (n, f) in fields(b)? {
                    match (n, f) {
                        (1, Field::Bytes(r)) => {
                            let names = [
                                (1, "namespace"),
                                (2, "verb"),
                                (3, "group"),
                                (4, "version"),
                                (5, "resource"),
                                (6, "subresource"),
                                (7, "name"),
                            ];
                            spec.insert("resourceAttributes".into(), strings(r, &names)?);
                        }
                        (2, Field::Bytes(r)) => {
                            let names = [(1, "path"), (2, "verb")];
                            spec.insert("nonResourceAttributes".into(), strings(r, &names)?);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    match kind.as_str() {
        "SelfSubjectAccessReview" => Ok(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": kind,
            "metadata": metadata, "spec": spec})),
        "SelfSubjectReview" => Ok(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": kind, "metadata": metadata})),
        _ => Err(ApiError::unsupported_media_type(&format!(
            "{MEDIA_TYPE} (kind {kind:?}; send JSON)"
        ))),
    }
}

/// Decodes a protobuf-encoded Namespace into its JSON form.
pub fn decode_namespace(body: &[u8]) -> Result<Value, ApiError> {
    let (kind, raw) = envelope(body)?;
    if kind != "Namespace" {
        return Err(ApiError::unsupported_media_type(&format!(
            "{MEDIA_TYPE} (kind {kind:?}; only Namespace is decoded, send JSON)"
        )));
    }
    let mut metadata = json!({});
    for (number, field) in fields(raw)? {
        if let (1, Field::Bytes(b)) = (number, field) {
            metadata = object_meta(b)?;
        }
    }
    Ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_kubectl_create_namespace() {
        let mut entry = ld(1, b"team");
        entry.extend(ld(2, b"a"));
        let mut meta = ld(1, b"foo");
        meta.extend(ld(11, &entry));
        let namespace = ld(1, &meta);
        let mut type_meta = ld(1, b"v1");
        type_meta.extend(ld(2, b"Namespace"));
        let mut unknown = ld(1, &type_meta);
        unknown.extend(ld(2, &namespace));
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let decoded = decode_namespace(&body).unwrap();
        assert_eq!(decoded["metadata"]["name"], "foo");
        assert_eq!(decoded["metadata"]["labels"]["team"], "a");
    }

    #[test]
    fn hostile_protobuf_is_a_client_error() {
        for body in [
            &b""[..],
            b"k8s\0\xff\xff\xff",
            b"k8s\0\x0a\x7f",
            b"nope",
            b"k8s\0\x0b",
        ] {
            let err = decode_namespace(body).unwrap_err();
            assert!((400..500).contains(&err.code), "{body:?}");
        }
    }
}
