//! What a stream of bytes is, from its first bytes only (magic numbers), so qemu-img is never
//! asked to guess the format of untrusted data: it is always told (`-f`).

/// How many leading bytes [`sniff`] needs to see every format it knows (the ISO 9660 volume
/// descriptor lies at 32 KiB + 1).
pub const SNIFF_BYTES: usize = 0x8006;

/// A format found by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip (`1f 8b`): decompressed first.
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`): decompressed first.
    Xz,
    /// QEMU's qcow2 (`QFI\xfb`, version 2 or 3).
    Qcow2,
    /// VMware's sparse extent (`KDMV`).
    Vmdk,
    /// Hyper-V's VHDX (`vhdxfile`).
    Vhdx,
    /// VirtualBox's VDI (`<<< ` header, signature `7f 10 da be` at 0x40).
    Vdi,
    /// A dynamic VHD (`conectix` footer copy at 0).
    Vpc,
    /// An ISO 9660 image (`CD001` at 0x8001): copied as it is, like raw.
    Iso,
    /// A POSIX tar archive (`ustar` at 257).
    Tar,
    /// A text VMDK descriptor: it names other files, so it is refused.
    VmdkDescriptor,
    /// Anything else: taken as a raw disk image.
    Raw,
}

impl Format {
    /// qemu-img's name for it (`-f`), for the formats that are converted.
    pub fn qemu_img_name(self) -> Option<&'static str> {
        match self {
            Self::Qcow2 => Some("qcow2"),
            Self::Vmdk => Some("vmdk"),
            Self::Vhdx => Some("vhdx"),
            Self::Vdi => Some("vdi"),
            Self::Vpc => Some("vpc"),
            Self::Raw | Self::Iso => Some("raw"),
            Self::Gzip | Self::Xz | Self::Tar | Self::VmdkDescriptor => None,
        }
    }

    /// A compression wrapped around the image.
    pub fn is_compression(self) -> bool {
        matches!(self, Self::Gzip | Self::Xz)
    }
}

/// The format of data starting with `head` (give it [`SNIFF_BYTES`] when the data has them).
pub fn sniff(head: &[u8]) -> Format {
    let at = |offset: usize, magic: &[u8]| {
        head.get(offset..offset + magic.len())
            .is_some_and(|b| b == magic)
    };
    if at(0, &[0x1f, 0x8b]) {
        return Format::Gzip;
    }
    if at(0, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Format::Xz;
    }
    if at(0, b"QFI\xfb") {
        return Format::Qcow2;
    }
    if at(0, b"KDMV") {
        return Format::Vmdk;
    }
    if at(0, b"# Disk DescriptorFile") {
        return Format::VmdkDescriptor;
    }
    if at(0, b"vhdxfile") {
        return Format::Vhdx;
    }
    if at(0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        return Format::Vdi;
    }
    if at(0, b"conectix") {
        return Format::Vpc;
    }
    if at(0x8001, b"CD001") {
        return Format::Iso;
    }
    if at(257, b"ustar") {
        return Format::Tar;
    }
    Format::Raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_magics() {
        assert_eq!(sniff(b"QFI\xfb\0\0\0\x03"), Format::Qcow2);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Format::Gzip);
        assert_eq!(sniff(b"\xfd7zXZ\0rest"), Format::Xz);
        assert_eq!(sniff(b"KDMV\x01\0\0\0"), Format::Vmdk);
        assert_eq!(sniff(b"vhdxfile"), Format::Vhdx);
        assert_eq!(sniff(b"# Disk DescriptorFile\n"), Format::VmdkDescriptor);
        let mut iso = vec![0u8; SNIFF_BYTES];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        assert_eq!(sniff(&iso), Format::Iso);
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Format::Tar);
        assert_eq!(sniff(b""), Format::Raw);
        assert_eq!(sniff(b"QF"), Format::Raw);
    }

    proptest! {
        /// Any bytes get an answer without a panic, and a qcow2 magic always wins whatever
        /// follows (what comes after the magic never changes the verdict).
        #[test]
        fn sniffing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40000)) {
            let _ = sniff(&bytes);
            let mut qcow = b"QFI\xfb".to_vec();
            qcow.extend_from_slice(&bytes);
            prop_assert_eq!(sniff(&qcow), Format::Qcow2);
        }

        /// Data that starts with none of the magics is raw unless an ISO/tar/VDI marker sits
        /// at its offset: random bytes are never taken for a format qemu-img would parse.
        #[test]
        fn random_bytes_are_raw(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let format = sniff(&bytes);
            let plausible = matches!(format, Format::Raw)
                || bytes.starts_with(&[0x1f, 0x8b])
                || bytes.starts_with(b"\xfd7zXZ\0")
                || bytes.starts_with(b"QFI\xfb")
                || bytes.starts_with(b"KDMV")
                || bytes.starts_with(b"vhdxfile")
                || bytes.starts_with(b"conectix")
                || bytes.starts_with(b"# Disk DescriptorFile")
                || bytes.get(0x40..0x44) == Some(&[0x7f, 0x10, 0xda, 0xbe][..])
                || bytes.get(257..262) == Some(&b"ustar"[..]);
            prop_assert!(plausible);
        }
    }
}
