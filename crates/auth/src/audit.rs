//! The audit log: one JSON line per audited request in kube-apiserver's `audit.k8s.io/v1`
//! `Event` shape (level `Metadata`, stage `ResponseComplete`), appended to
//! `<data-dir>/audit.log` (mode 0600), rotated by size to `audit.log.1` ... `audit.log.N`; and the
//! reader with filters behind `ferrovirt audit`.
//!
//! Audited ([`should_audit`]): every write, and every access to a VM's TPM/EFI state or its
//! console (start/stop/restart and state rollback are writes; console, VNC, serial log and state
//! generations are reads that are audited too).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use ferrovirt_storage::atomic::{self, AtomicError, PRIVATE_FILE_MODE};

use crate::user::UserInfo;

pub const AUDIT_API_VERSION: &str = "audit.k8s.io/v1";

/// Read subresources that touch a VM's state or console, audited like writes (`migrationtunnel`
/// carries a VM's whole state, its vTPM's included, to this host).
pub const AUDITED_READ_SUBRESOURCES: &[&str] = &[
    "console",
    "vnc",
    "serial-log",
    "stategenerations",
    "migrationtunnel",
    "portforward",
];

/// Whether a request is audited: every verb but `get`/`list`/`watch`, and reads of
/// [`AUDITED_READ_SUBRESOURCES`].
pub fn should_audit(verb: &str, subresource: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch") || AUDITED_READ_SUBRESOURCES.contains(&subresource)
}

/// Why the audit log cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Io(#[from] AtomicError),
    #[error("cannot encode an audit event: {0}")]
    Encode(String),
    #[error(
        "--since {value:?} is neither a duration (e.g. 30s, 15m, 2h, 7d, 1h30m) nor an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)"
    )]
    BadSince { value: String },
    #[error(
        "audit log rotation needs keep >= 1 and max_bytes >= 1024 (got keep {keep}, max_bytes {max_bytes})"
    )]
    BadRotation { keep: usize, max_bytes: u64 },
}

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> AuditError {
    AuditError::Io(AtomicError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    })
}

/// The object a request was about.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The answer's status (a `metav1.Status` with at least the code).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus {
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub code: u16,
}

/// One audit event, as kube-apiserver writes it with `--audit-log-format=json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: UserInfo,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// kube-apiserver's `MicroTime`: RFC 3339 in UTC with microseconds.
pub fn micro_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

impl Event {
    /// An event for a request received at `received`, by `user`; the stage timestamp is now.
    pub fn new(user: &UserInfo, verb: &str, request_uri: &str, received: OffsetDateTime) -> Self {
        Event {
            kind: "Event".to_owned(),
            api_version: AUDIT_API_VERSION.to_owned(),
            level: "Metadata".to_owned(),
            audit_id: uuid::Uuid::new_v4().to_string(),
            stage: "ResponseComplete".to_owned(),
            request_uri: request_uri.to_owned(),
            verb: verb.to_owned(),
            user: user.clone(),
            source_ips: Vec::new(),
            user_agent: String::new(),
            object_ref: None,
            response_status: None,
            request_received_timestamp: micro_time(received),
            stage_timestamp: micro_time(OffsetDateTime::now_utc()),
            annotations: BTreeMap::new(),
        }
    }

    /// The client address and `User-Agent`.
    pub fn source(mut self, ip: impl ToString, user_agent: Option<&str>) -> Self {
        self.source_ips = vec![ip.to_string()];
        self.user_agent = user_agent.unwrap_or_default().to_owned();
        self
    }

    /// The object the request was about.
    pub fn object(mut self, object: ObjectReference) -> Self {
        self.object_ref = Some(object);
        self
    }

    /// The answer's HTTP code (and for failures the Status reason and message).
    pub fn response(mut self, code: u16, reason: &str, message: &str) -> Self {
        self.response_status = Some(ResponseStatus {
            metadata: BTreeMap::new(),
            status: if code >= 400 {
                "Failure".to_owned()
            } else {
                String::new()
            },
            message: message.to_owned(),
            reason: reason.to_owned(),
            code,
        });
        self.stage_timestamp = micro_time(OffsetDateTime::now_utc());
        self
    }

    /// The authorization decision, as kube-apiserver's annotations.
    pub fn authorization(mut self, allowed: bool, reason: &str) -> Self {
        self.annotations.insert(
            "authorization.k8s.io/decision".to_owned(),
            if allowed { "allow" } else { "forbid" }.to_owned(),
        );
        self.annotations
            .insert("authorization.k8s.io/reason".to_owned(), reason.to_owned());
        self
    }

    /// When the request was received.
    pub fn received(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.request_received_timestamp, &Rfc3339).ok()
    }

    /// One line for people: `TIME USER VERB RESOURCE NAMESPACE/NAME CODE`.
    pub fn summary(&self) -> String {
        let object = self.object_ref.clone().unwrap_or_default();
        let resource = if object.subresource.is_empty() {
            object.resource.clone()
        } else {
            format!("{}/{}", object.resource, object.subresource)
        };
        let target = match (object.namespace.as_str(), object.name.as_str()) {
            ("", "") => self.request_uri.clone(),
            ("", name) => name.to_owned(),
            (ns, name) => format!("{ns}/{name}"),
        };
        let code = self
            .response_status
            .as_ref()
            .map_or_else(|| "-".to_owned(), |s| s.code.to_string());
        format!(
            "{} {} {} {} {} {}",
            self.request_received_timestamp,
            self.user.name,
            self.verb,
            if resource.is_empty() { "-" } else { &resource },
            target,
            code
        )
    }
}

/// When the log is rotated and how many old files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would make `audit.log` larger than this.
    pub max_bytes: u64,
    /// Keep `audit.log.1` ... `audit.log.<keep>`.
    pub keep: usize,
}

impl Default for Rotation {
    /// 100 MiB, 5 old files (kube-apiserver's `--audit-log-maxsize=100 --audit-log-maxbackup`).
    fn default() -> Self {
        Rotation {
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// The appending side of the audit log. Safe to share between threads; each event is one
/// `write(2)` on an `O_APPEND` file.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    rotation: Rotation,
    file: Mutex<Option<(File, u64)>>,
}

fn open_private_append(path: &Path) -> Result<(File, u64), AuditError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|e| io_error("open the audit log", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_error("stat the audit log", path, e))?;
    if meta.permissions().mode() & 0o777 != PRIVATE_FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
            .map_err(|e| io_error("set permissions of", path, e))?;
    }
    Ok((file, meta.len()))
}

/// `audit.log.<n>`.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl AuditLog {
    /// Opens (creating, mode 0600) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> Result<Self, AuditError> {
        if rotation.keep == 0 || rotation.max_bytes < 1024 {
            return Err(AuditError::BadRotation {
                keep: rotation.keep,
                max_bytes: rotation.max_bytes,
            });
        }
        let opened = open_private_append(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            rotation,
            file: Mutex::new(Some(opened)),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event as a JSON line, rotating first when the line would overflow the file.
    pub fn append(&self, event: &Event) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(event).map_err(|e| AuditError::Encode(e.to_string()))?;
        line.push(b'\n');
        let mut guard = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let size = guard.as_ref().map_or(0, |(_, size)| *size);
        if size > 0 && size + line.len() as u64 > self.rotation.max_bytes {
            *guard = None;
            self.rotate()?;
        }
        if guard.is_none() {
            *guard = Some(open_private_append(&self.path)?);
        }
        if let Some((file, size)) = guard.as_mut() {
            file.write_all(&line)
                .map_err(|e| io_error("append to the audit log", &self.path, e))?;
            *size += line.len() as u64;
        }
        Ok(())
    }

    fn rotate(&self) -> Result<(), AuditError> {
        for n in (1..self.rotation.keep).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                let to = rotated_path(&self.path, n + 1);
                std::fs::rename(&from, &to).map_err(|e| io_error("rotate", &from, e))?;
            }
        }
        let first = rotated_path(&self.path, 1);
        std::fs::rename(&self.path, &first).map_err(|e| io_error("rotate", &self.path, e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            atomic::fsync_dir(dir)?;
        }
        Ok(())
    }
}

/// What `ferrovirt audit` selects. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub verb: Option<String>,
    /// `virtualmachines` (with its subresources) or `virtualmachines/start` (that one only).
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub since: Option<OffsetDateTime>,
}

impl AuditFilter {
    pub fn matches(&self, event: &Event) -> bool {
        let object = event.object_ref.clone().unwrap_or_default();
        let same =
            |wanted: &Option<String>, actual: &str| wanted.as_deref().is_none_or(|w| w == actual);
        let resource_ok =
            self.resource
                .as_deref()
                .is_none_or(|wanted| match wanted.split_once('/') {
                    Some((resource, sub)) => {
                        object.resource == resource && object.subresource == sub
                    }
                    None => object.resource == wanted,
                });
        same(&self.user, &event.user.name)
            && same(&self.verb, &event.verb)
            && same(&self.namespace, &object.namespace)
            && same(&self.name, &object.name)
            && resource_ok
            && self
                .since
                .is_none_or(|since| event.received().is_some_and(|at| at >= since))
    }
}

/// Events read back, oldest first, and the lines that were not events (e.g. a line cut short by
/// a crash), as `(file, line number)`.
#[derive(Debug, Default)]
pub struct AuditRead {
    pub events: Vec<Event>,
    pub unreadable_lines: Vec<(PathBuf, usize)>,
}

/// Reads `audit.log.N` ... `audit.log.1`, then `audit.log`, keeping the events `filter` selects.
/// Missing files are skipped.
pub fn read_events(path: &Path, filter: &AuditFilter) -> Result<AuditRead, AuditError> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut n = 1;
    while rotated_path(path, n).exists() {
        files.push(rotated_path(path, n));
        n += 1;
    }
    files.reverse();
    files.push(path.to_path_buf());
    let mut read = AuditRead::default();
    for file in files {
        let handle = match File::open(&file) {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("read the audit log", &file, e)),
        };
        for (index, line) in BufReader::new(handle).lines().enumerate() {
            let line = line.map_err(|e| io_error("read the audit log", &file, e))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(event) if filter.matches(&event) => read.events.push(event),
                Ok(_) => {}
                Err(_) => read.unreadable_lines.push((file.clone(), index + 1)),
            }
        }
    }
    Ok(read)
}

/// `--since`: a duration back from `now` (`30s`, `15m`, `2h`, `7d`, combined as `1h30m`) or an
/// RFC 3339 time.
pub fn parse_since(value: &str, now: OffsetDateTime) -> Result<OffsetDateTime, AuditError> {
    let bad = || AuditError::BadSince {
        value: value.to_owned(),
    };
    if let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(at);
    }
    let mut seconds: i64 = 0;
    let mut number = String::new();
    let mut any = false;
    for c in value.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = number.parse().map_err(|_| bad())?;
        seconds = n
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
        any = true;
    }
    if !any || !number.is_empty() {
        return Err(bad());
    }
    now.checked_sub(time::Duration::seconds(seconds))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(
        user: &str,
        verb: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
        code: u16,
    ) -> Event {
        Event::new(
            &UserInfo::authenticated(user, "", Vec::new()),
            verb,
            &format!("/apis/kubevirt.io/v1/namespaces/{ns}/{resource}/{name}"),
            OffsetDateTime::now_utc(),
        )
        .source("127.0.0.1", Some("kubectl/v1.31.0"))
        .object(ObjectReference {
            resource: resource.to_owned(),
            namespace: ns.to_owned(),
            name: name.to_owned(),
            api_group: "kubevirt.io".to_owned(),
            api_version: "v1".to_owned(),
            subresource: sub.to_owned(),
            ..ObjectReference::default()
        })
        .response(code, "", "")
    }

    #[test]
    fn events_have_kube_apiservers_json_shape() {
        let e = event(
            "alice",
            "create",
            "virtualmachines",
            "",
            "default",
            "vm1",
            201,
        )
        .authorization(true, "RBAC: allowed by x");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["level"], "Metadata");
        assert_eq!(v["stage"], "ResponseComplete");
        assert_eq!(
            v["user"],
            json!({"username": "alice", "groups": ["system:authenticated"]})
        );
        assert_eq!(v["sourceIPs"], json!(["127.0.0.1"]));
        assert_eq!(v["userAgent"], "kubectl/v1.31.0");
        assert_eq!(
            v["objectRef"],
            json!({"resource": "virtualmachines", "namespace": "default", "name": "vm1", "apiGroup": "kubevirt.io", "apiVersion": "v1"})
        );
        assert_eq!(v["responseStatus"], json!({"metadata": {}, "code": 201}));
        assert_eq!(v["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(v["auditID"].as_str().unwrap().len() == 36);
        let ts = v["requestReceivedTimestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-01-01T00:00:00.000000Z".len(), "{ts}");
        assert!(e.received().is_some());
        assert!(
            e.summary()
                .contains("alice create virtualmachines default/vm1 201")
        );
    }

    #[test]
    fn what_is_audited() {
        assert!(should_audit("create", ""));
        assert!(should_audit("update", "start"));
        assert!(should_audit("delete", ""));
        assert!(should_audit("get", "console"));
        assert!(should_audit("get", "serial-log"));
        assert!(!should_audit("get", ""));
        assert!(!should_audit("watch", ""));
    }

    #[test]
    fn append_rotate_and_read_back_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(
            &path,
            Rotation {
                max_bytes: 2048,
                keep: 2,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for i in 0..20 {
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            log.append(&event(
                user,
                "update",
                "virtualmachines",
                "start",
                "default",
                &format!("vm{i}"),
                202,
            ))
            .unwrap();
        }
        assert!(rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        for p in [path.clone(), rotated_path(&path, 1), rotated_path(&path, 2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 2048);
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let all = read_events(&path, &AuditFilter::default()).unwrap();
        assert!(
            all.events.len() < 20 && all.events.len() >= 6,
            "{}",
            all.events.len()
        );
        // Oldest first, newest last.
        assert_eq!(
            all.events.last().unwrap().object_ref.as_ref().unwrap().name,
            "vm19"
        );
        let names: Vec<u32> = all
            .events
            .iter()
            .map(|e| e.object_ref.as_ref().unwrap().name[2..].parse().unwrap())
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");

        let bob = read_events(
            &path,
            &AuditFilter {
                user: Some("bob".into()),
                ..AuditFilter::default()
            },
        )
        .unwrap();
        assert!(bob.events.iter().all(|e| e.user.name == "bob") && !bob.events.is_empty());
        let start = read_events(
            &path,
            &AuditFilter {
                resource: Some("virtualmachines/start".into()),
                name: Some("vm19".into()),
                ..AuditFilter::default()
            },
        )
        .unwrap();
        assert_eq!(start.events.len(), 1);
        // A resource without subresource selects its subresources too.
        let vms = read_events(
            &path,
            &AuditFilter {
                resource: Some("virtualmachines".into()),
                ..AuditFilter::default()
            },
        )
        .unwrap();
        assert_eq!(vms.events.len(), all.events.len());
        let none = read_events(
            &path,
            &AuditFilter {
                resource: Some("virtualmachines/stop".into()),
                ..AuditFilter::default()
            },
        )
        .unwrap();
        assert!(none.events.is_empty());
        let future = read_events(
            &path,
            &AuditFilter {
                since: Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
                ..AuditFilter::default()
            },
        )
        .unwrap();
        assert!(future.events.is_empty());

        // A line cut short by a crash is reported, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"kind\":\"Ev")
            .unwrap();
        let read = read_events(&path, &AuditFilter::default()).unwrap();
        assert_eq!(read.unreadable_lines.len(), 1);
        // Reopening keeps appending.
        drop(log);
        let log = AuditLog::open(&path, Rotation::default()).unwrap();
        log.append(&event(
            "carol",
            "delete",
            "virtualmachines",
            "",
            "default",
            "x",
            200,
        ))
        .unwrap();
        assert!(
            AuditLog::open(
                &path,
                Rotation {
                    max_bytes: 10,
                    keep: 0
                }
            )
            .is_err()
        );
    }

    #[test]
    fn since_values() {
        let now = OffsetDateTime::parse("2026-03-01T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(
            parse_since("90s", now).unwrap(),
            now - time::Duration::seconds(90)
        );
        assert_eq!(
            parse_since("1h30m", now).unwrap(),
            now - time::Duration::minutes(90)
        );
        assert_eq!(
            parse_since("7d", now).unwrap(),
            now - time::Duration::days(7)
        );
        assert_eq!(
            parse_since("2026-02-01T00:00:00Z", now).unwrap(),
            OffsetDateTime::parse("2026-02-01T00:00:00Z", &Rfc3339).unwrap()
        );
        for bad in ["", "5", "5x", "h", "yesterday"] {
            assert!(
                parse_since(bad, now)
                    .unwrap_err()
                    .to_string()
                    .contains("--since"),
                "{bad}"
            );
        }
    }
}
