//! UEFI firmware: QEMU firmware descriptors (/usr/share/qemu/firmware/*.json) and the choice of
//! firmware by the features a VM needs, and OVMF VARS files (checking their size and header, copying
//! templates).
