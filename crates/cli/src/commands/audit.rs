//! `ferrovirt audit`: the audit log of `ferrovirt serve` (`<data-dir>/audit.log` and its rotated
//! files, oldest first), filtered by user, verb, resource, namespace, name and time, as a table or
//! as the `audit.k8s.io/v1` JSON lines themselves. Read on the server's host (the log is 0600).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use ferrovirt_auth::audit::{AuditFilter, Event, parse_since, read_events};
use time::OffsetDateTime;

use crate::connection::DEFAULT_DATA_DIR;
use crate::output::format_rows;

/// The audit log's file name inside a data dir.
pub const AUDIT_LOG: &str = "audit.log";

/// Output formats of `ferrovirt audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    /// The events as JSON lines, as the log holds them.
    Json,
}

/// Arguments of `ferrovirt audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The data dir of `ferrovirt serve` (the log is <data-dir>/audit.log).
    #[arg(long = "data-dir", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Only requests of this user.
    #[arg(long = "user", value_name = "NAME")]
    pub user: Option<String>,
    /// Only this verb (create, update, patch, delete, get, ...).
    #[arg(long = "verb", value_name = "VERB")]
    pub verb: Option<String>,
    /// Only this resource (`virtualmachines`, with its subresources) or subresource
    /// (`virtualmachines/start`).
    #[arg(long = "resource", value_name = "RESOURCE")]
    pub resource: Option<String>,
    /// Only objects in this namespace.
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only objects with this name.
    #[arg(long = "name", value_name = "NAME")]
    pub name: Option<String>,
    /// Only requests since this long ago (30s, 15m, 1h, 7d, 1h30m) or this RFC 3339 time.
    #[arg(long = "since", value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Output format (default: a table).
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<AuditOutput>,
}

/// Runs `ferrovirt audit`.
pub fn run(args: &AuditArgs) -> ExitCode {
    match audit(args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The filter the flags select.
pub fn filter_of(args: &AuditArgs, now: OffsetDateTime) -> Result<AuditFilter, String> {
    let since = args
        .since
        .as_deref()
        .map(|value| parse_since(value, now))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(AuditFilter {
        user: args.user.clone(),
        verb: args.verb.clone(),
        resource: args.resource.clone(),
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        since,
    })
}

fn audit(args: &AuditArgs, out: &mut impl Write) -> Result<(), String> {
    let filter = filter_of(args, OffsetDateTime::now_utc())?;
    let path = args.data_dir.join(AUDIT_LOG);
    check_readable(&path)?;
    let read = read_events(&path, &filter).map_err(|e| e.to_string())?;
    for (file, line) in &read.unreadable_lines {
        eprintln!(
            "warning: line {line} of {} is not an audit event (skipped)",
            file.display()
        );
    }
    let text = match args.output {
        Some(AuditOutput::Json) => {
            let mut text = String::new();
            for event in &read.events {
                let line = serde_json::to_string(event).map_err(|e| e.to_string())?;
                text.push_str(&line);
                text.push('\n');
            }
            text
        }
        None if read.events.is_empty() => {
            eprintln!("No audit events found.");
            String::new()
        }
        None => table(&read.events),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the output: {e}"))
}

/// The log must be there and readable: a missing log means a wrong --data-dir (a running server
/// creates it at start), an unreadable one a user who is not the server's.
fn check_readable(path: &Path) -> Result<(), String> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "there is no audit log at {}; pass the --data-dir of `ferrovirt serve` (the server creates <data-dir>/{AUDIT_LOG} when it starts)",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "cannot read the audit log {}: {e} (it is readable by the server's user only: run this as that user, e.g. with sudo)",
            path.display()
        )),
        Err(e) => Err(format!("cannot read the audit log {}: {e}", path.display())),
    }
}

/// TIME USER VERB RESOURCE NAMESPACE NAME CODE.
pub fn table(events: &[Event]) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut lines = vec![
        [
            "TIME",
            "USER",
            "VERB",
            "RESOURCE",
            "NAMESPACE",
            "NAME",
            "CODE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for event in events {
        let object = event.object_ref.clone().unwrap_or_default();
        let resource = if object.subresource.is_empty() {
            object.resource.clone()
        } else {
            format!("{}/{}", object.resource, object.subresource)
        };
        let name = if object.name.is_empty() && object.resource.is_empty() {
            event.request_uri.clone()
        } else {
            object.name.clone()
        };
        lines.push(vec![
            dash(&event.request_received_timestamp),
            dash(&event.user.name),
            dash(&event.verb),
            dash(&resource),
            dash(&object.namespace),
            dash(&name),
            event
                .response_status
                .as_ref()
                .map_or_else(|| "-".to_owned(), |s| s.code.to_string()),
        ]);
    }
    format_rows(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_auth::UserInfo;
    use ferrovirt_auth::audit::{AuditLog, ObjectReference, Rotation};

    fn args(data_dir: &Path) -> AuditArgs {
        AuditArgs {
            data_dir: data_dir.to_path_buf(),
            user: None,
            verb: None,
            resource: None,
            namespace: None,
            name: None,
            since: None,
            output: None,
        }
    }

    fn event(user: &str, verb: &str, resource: &str, sub: &str, name: &str, code: u16) -> Event {
        Event::new(
            &UserInfo::authenticated(user, "", Vec::new()),
            verb,
            &format!("/apis/kubevirt.io/v1/namespaces/default/{resource}/{name}"),
            OffsetDateTime::now_utc(),
        )
        .object(ObjectReference {
            resource: resource.to_owned(),
            namespace: "default".to_owned(),
            name: name.to_owned(),
            api_group: "kubevirt.io".to_owned(),
            api_version: "v1".to_owned(),
            subresource: sub.to_owned(),
            ..ObjectReference::default()
        })
        .response(code, "", "")
    }

    #[test]
    fn reads_what_the_audit_log_wrote_with_filters() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join(AUDIT_LOG), Rotation::default()).unwrap();
        log.append(&event("alice", "create", "virtualmachines", "", "web", 201))
            .unwrap();
        log.append(&event(
            "bob",
            "update",
            "virtualmachines",
            "start",
            "web",
            200,
        ))
        .unwrap();
        log.append(&event("alice", "delete", "virtualmachines", "", "db", 403))
            .unwrap();

        let mut out = Vec::new();
        audit(&args(dir.path()), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("TIME") && lines[0].ends_with("NAMESPACE   NAME   CODE"));
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            &cells[1..],
            [
                "bob",
                "update",
                "virtualmachines/start",
                "default",
                "web",
                "200"
            ]
        );

        let mut only_alice = args(dir.path());
        only_alice.user = Some("alice".to_owned());
        only_alice.verb = Some("delete".to_owned());
        only_alice.output = Some(AuditOutput::Json);
        let mut out = Vec::new();
        audit(&only_alice, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let parsed: Event = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(parsed.object_ref.unwrap().name, "db");
        assert_eq!(parsed.response_status.unwrap().code, 403);

        let mut future = args(dir.path());
        future.since = Some("2999-01-01T00:00:00Z".to_owned());
        let mut out = Vec::new();
        audit(&future, &mut out).unwrap();
        assert!(out.is_empty());
        future.since = Some("yesterday".to_owned());
        let err = audit(&future, &mut Vec::new()).unwrap_err();
        assert!(err.contains("--since") && err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn a_missing_log_names_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = audit(&args(&dir.path().join("nope")), &mut Vec::new()).unwrap_err();
        assert!(
            err.contains("no audit log at") && err.contains("--data-dir"),
            "{err}"
        );
    }
}
