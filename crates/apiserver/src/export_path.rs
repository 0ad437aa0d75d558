//! The URL paths of KubeVirt's export proxy: `/api/export.kubevirt.io/v1beta1/namespaces/<ns>/
//! virtualmachineexports/<name>/` followed by the export server's own paths (`volumes/<pvc>/
//! disk.img`, `disk.img.gz`, `disk.tar.gz`, `dir/<path>`, `internal|external/manifests/all`,
//! `.../manifests/secret`), parsed into an [`ExportTarget`].

/// The group/version prefix of export paths (under `/api/`, as KubeVirt's proxy serves them).
pub const PREFIX: &str = "/api/export.kubevirt.io/";

/// What of one volume is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFile {
    /// `disk.img`
    Raw,
    /// `disk.img.gz`
    Gzip,
    /// `disk.tar.gz`
    Archive,
    /// `dir/<path>` (`""`: the volume's root listing).
    Dir(String),
}

impl ExportFile {
    /// The format name of `status.links` this file belongs to.
    pub fn format(&self) -> &'static str {
        use ferrovirt_api::export::format;
        match self {
            ExportFile::Raw => format::RAW,
            ExportFile::Gzip => format::GZIP,
            ExportFile::Archive => format::TAR_GZ,
            ExportFile::Dir(_) => format::DIR,
        }
    }
}

/// The export server's resource a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportResource {
    Volume {
        volume: String,
        file: ExportFile,
    },
    /// `internal|external/manifests/all` (`secret: false`) or `.../manifests/secret`.
    Manifests {
        link: String,
        secret: bool,
    },
}

/// One export path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTarget {
    pub version: String,
    pub namespace: String,
    pub name: String,
    /// `None`: a path the export server does not serve (404 once the token is checked).
    pub resource: Option<ExportResource>,
}

/// Parses a path that starts with [`PREFIX`]; `None` when it is not an export path at all.
pub fn parse(path: &str) -> Option<ExportTarget> {
    let rest = path.strip_prefix(PREFIX)?;
    let dir_suffix = rest.ends_with('/');
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let [
        version,
        "namespaces",
        ns,
        "virtualmachineexports",
        name,
        tail @ ..,
    ] = segments.as_slice()
    else {
        return None;
    };
    let resource = match tail {
        ["volumes", volume, "disk.img"] => Some(ExportResource::Volume {
            volume: (*volume).to_owned(),
            file: ExportFile::Raw,
        }),
        ["volumes", volume, "disk.img.gz"] => Some(ExportResource::Volume {
            volume: (*volume).to_owned(),
            file: ExportFile::Gzip,
        }),
        ["volumes", volume, "disk.tar.gz"] => Some(ExportResource::Volume {
            volume: (*volume).to_owned(),
            file: ExportFile::Archive,
        }),
        ["volumes", volume, "dir", inner @ ..] => {
            let mut inner = inner.join("/");
            if dir_suffix && !inner.is_empty() {
                inner.push('/');
            }
            Some(ExportResource::Volume {
                volume: (*volume).to_owned(),
                file: ExportFile::Dir(inner),
            })
        }
        [
            link @ ("internal" | "external"),
            "manifests",
            which @ ("all" | "secret"),
        ] => Some(ExportResource::Manifests {
            link: (*link).to_owned(),
            secret: *which == "secret",
        }),
        _ => None,
    };
    Some(ExportTarget {
        version: (*version).to_owned(),
        namespace: (*ns).to_owned(),
        name: (*name).to_owned(),
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubevirt_export_paths() {
        let base = "/api/export.kubevirt.io/v1beta1/namespaces/default/virtualmachineexports/e";
        let t = parse(&format!("{base}/volumes/p/disk.img.gz")).unwrap();
        assert_eq!(
            t.resource,
            Some(ExportResource::Volume {
                volume: "p".into(),
                file: ExportFile::Gzip
            })
        );
        assert_eq!(t.namespace, "default");
        assert_eq!(t.name, "e");
        let t = parse(&format!("{base}/volumes/p/dir/swtpm/")).unwrap();
        assert_eq!(
            t.resource,
            Some(ExportResource::Volume {
                volume: "p".into(),
                file: ExportFile::Dir("swtpm/".into())
            })
        );
        let t = parse(&format!("{base}/external/manifests/secret")).unwrap();
        assert_eq!(
            t.resource,
            Some(ExportResource::Manifests {
                link: "external".into(),
                secret: true
            })
        );
        assert_eq!(
            parse(&format!("{base}/volumes/p/other")).unwrap().resource,
            None
        );
        assert!(parse("/api/v1/namespaces").is_none());
    }
}
